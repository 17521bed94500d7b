"""Offline detection for the Hugging Face hub, once per process.

Without ``HF_HUB_OFFLINE``, the hub libraries retry every request to an unreachable hub for minutes (a dry run of
a paper config sat 9 min 41 s through ~250 retries on a machine without network). :func:`offline` answers from
the variables when one is set (``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE``, ``HF_DATASETS_OFFLINE``; ``0`` means
"online, do not check"); when none is set it tries one TCP connection to the hub (or the HTTPS proxy), a few
seconds at most, and if that fails it turns the libraries' offline mode on, as if ``HF_HUB_OFFLINE=1`` had been
set, and says so in one line. Nothing is probed until something needs the hub.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from urllib.parse import urlparse

log = logging.getLogger("sftmix")

VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
TRUE = {"1", "ON", "YES", "TRUE"}
PROBE_TIMEOUT = 3.0  # seconds for the name lookup, and again for the connection
_state: dict[str, bool] = {}
_lock = threading.Lock()


def _setting() -> bool | None:
    """True/False when a variable says offline/online; None when none is set."""
    values = [os.environ.get(v) for v in VARIABLES]
    if any((x or "").strip().upper() in TRUE for x in values):
        return True
    if any(x is not None and x.strip() != "" for x in values):
        return False  # e.g. HF_HUB_OFFLINE=0: the user wants the hub tried, however slow
    return None


def _target() -> tuple[str, int]:
    proxy = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                  if os.environ.get(v)), None)
    url = urlparse(proxy if proxy and "://" in proxy else f"http://{proxy}" if proxy else
                   os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> str | None:
    """None when a TCP connection to ``host:port`` opens within the timeouts; else why not (one phrase)."""
    found: list = []

    def lookup() -> None:
        try:
            found.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as e:
            found.append(e)

    t = threading.Thread(target=lookup, daemon=True)  # getaddrinfo has no timeout of its own
    t.start()
    t.join(timeout)
    if not found:
        return f"no answer to the name lookup of {host} in {timeout:.0f} s"
    if isinstance(found[0], OSError):
        return f"cannot resolve {host} ({found[0].strerror or found[0]})"
    for family, kind, proto, _, addr in found[0][:3]:
        try:
            with socket.socket(family, kind, proto) as s:
                s.settimeout(timeout)
                s.connect(addr)
                return None
        except OSError as e:
            why = f"cannot connect to {host}:{port} ({e.strerror or type(e).__name__})"
    return why


def go_offline() -> None:
    """Offline mode for this process and its children: the variables, and the libraries already imported."""
    for v in VARIABLES:
        os.environ[v] = "1"
    for module, names in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")),
                          ("transformers.utils.hub", ("_is_offline_mode",))):
        mod = sys.modules.get(module)
        for name in names:
            if mod is not None and hasattr(mod, name):
                setattr(mod, name, True)


def offline() -> bool:
    """Whether to treat the hub as unreachable (see the module docstring); probes at most once per process."""
    said = _setting()
    if said is not None:
        return said
    with _lock:
        if "offline" not in _state:
            host, port = _target()
            why = reachable(host, port)
            _state["offline"] = why is not None
            if why is not None:
                go_offline()
                print(f"bench: the Hugging Face hub is unreachable ({why}): working offline, as with "
                      "HF_HUB_OFFLINE=1 (set HF_HUB_OFFLINE=0 to keep trying the network)", file=sys.stderr,
                      flush=True)
    return _state["offline"]
