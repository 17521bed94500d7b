"""Warnings the losses give once per process (a fallback to full logits, a kernel that failed to build)."""
from __future__ import annotations

import logging

log = logging.getLogger("sftmix")

# Reasons already warned about in this process; tests replace it to start from none.
_WARNED: set[str] = set()


def warn_once(key: str, msg: str, *args) -> bool:
    """Log ``msg % args`` as a warning the first time ``key`` is seen; True if it was logged."""
    if key in _WARNED:
        return False
    _WARNED.add(key)
    log.warning(msg, *args)
    return True
