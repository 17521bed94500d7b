"""Pinned downloads: a file fetched once from a URL into ``$SFTMIX_HOME/downloads`` and checked against its sha256.

Used for data the project does not ship and no package installs any more (BIG-Bench Hard's task files, judge
prompts without their package). A file is never used unless its sha256 is the pinned one, so a mirror (or a local
copy) cannot change a result silently.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from core.errors import UserError
from core.io import atomic_path


class Unavailable(UserError):
    """The file is not here and cannot be fetched now (offline, unreachable): a caller may try another source."""


_FAILED: dict[str, str] = {}  # url -> why: one attempt per process (several configs may name the same file)


def home() -> Path:
    return Path(os.environ.get("SFTMIX_HOME") or "~/.cache/sftmix").expanduser()


def offline() -> bool:
    truthy = {"1", "ON", "YES", "TRUE"}
    return any(os.environ.get(v, "").upper() in truthy for v in ("HF_HUB_OFFLINE", "SFTMIX_OFFLINE"))


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch(url: str, sha256: str, target: Path, what: str, timeout: float = 30) -> Path:
    """``target`` when it holds the pinned file, else ``url`` downloaded into it (atomically) after its sha256 is
    checked. Offline (``HF_HUB_OFFLINE`` / ``SFTMIX_OFFLINE``) or unreachable: :class:`Unavailable` naming ``what``
    and how to provide the file instead; a wrong checksum: a UserError."""
    if target.is_file() and sha256_of(target) == sha256:
        return target
    if offline():
        raise Unavailable(f"{what}: not downloaded yet and offline (HF_HUB_OFFLINE/SFTMIX_OFFLINE is set): {url}")
    if url in _FAILED:
        raise Unavailable(_FAILED[url])
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            data = r.read()
    except (OSError, ValueError) as e:
        _FAILED[url] = f"{what}: cannot download {url} ({type(e).__name__}: {str(e)[:160]})"
        raise Unavailable(_FAILED[url]) from None
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise UserError(f"{what}: {url} has sha256 {got[:16]}..., not the pinned {sha256[:16]}...; refusing it")
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target
