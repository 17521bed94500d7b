"""``bench view --serve``: the report over HTTP on 127.0.0.1 only (for browsers or set-ups that handle a large
file better from a server than from disk). Serves exactly one file; nothing else on the machine is reachable."""
from __future__ import annotations

import http.server
import sys
import webbrowser
from pathlib import Path


def serve(path: Path, port: int = 0, open_browser: bool = True) -> None:
    """Serve ``path`` at ``http://127.0.0.1:<port>/`` until interrupted (Ctrl-C)."""
    body = Path(path).read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if self.path.split("?")[0].split("#")[0] not in ("/", "/" + Path(path).name):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # quiet: one line per request would bury the URL
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler) as httpd:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        print(f"serving {path} at {url} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        if open_browser:
            try:
                webbrowser.open(url)
            except Exception:  # no browser on this machine: the URL above is enough
                pass
        httpd.serve_forever()
