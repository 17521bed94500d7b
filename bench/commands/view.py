"""`bench view RUN [RUN...] [--out report.html] [--serve]`: a self-contained HTML report of finished runs."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.tables import LAYOUTS
from bench.view import write_report
from bench.view.serve import serve
from core.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="bench run result directories")
    parser.add_argument("--out", metavar="FILE", default="report.html",
                        help="the HTML file to write (default: report.html)")
    parser.add_argument("--layout", action="append", choices=LAYOUTS, metavar="LAYOUT",
                        help="table layout(s) to show (repeatable; default: auto, plus default when auto picks "
                             f"another; choices: {', '.join(LAYOUTS)})")
    parser.add_argument("--paper", action="store_true", help="add the paper's reported numbers to the tables")
    parser.add_argument("--resamples", type=int, default=2000,
                        help="bootstrap resamples (default 2000, as `bench table`)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0, as bench table)")
    parser.add_argument("--serve", action="store_true", help="also serve the file on 127.0.0.1 until Ctrl-C")
    parser.add_argument("--port", type=int, default=0, help="port for --serve (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="with --serve: do not open a browser")


def run(args) -> int:
    out = Path(args.out)
    if out.is_dir():  # a folder: the report goes inside it
        out = out / "report.html"
    try:
        out = write_report(args.runs, out, layouts=tuple(args.layout or ("auto",)), paper=args.paper,
                           n_resamples=args.resamples, seed=args.seed)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror or e}") from None
    size = out.stat().st_size
    print(f"wrote {out} ({size / 1e6:.1f} MB)" if size >= 1e5 else f"wrote {out} ({size / 1e3:.0f} kB)")
    if args.serve:
        sys.stdout.flush()
        try:
            serve(out, args.port, open_browser=not args.no_browser)
        except OSError as e:
            raise UserError(f"--serve: cannot listen on 127.0.0.1:{args.port} ({e.strerror or e})") from None
        except KeyboardInterrupt:
            print("stopped serving", file=sys.stderr)
    return 0
