"""The one exception type that means "the user gave us bad input", and one-line renderings of other errors.

The CLI turns :class:`UserError` into a single line on stderr and exit code 2; anything else is a bug and keeps its
traceback. :class:`Interrupted` is a Ctrl-C that already knows what it kept (the CLI prints it, exit 130).
"""
from __future__ import annotations

import errno as _errno
import os


class UserError(Exception):
    """Bad input from the user (missing file, malformed row, unknown option...). Message is one line."""


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C (or SIGTERM) caught mid-work: the message says what was kept and what was cancelled."""


def first_line(e: BaseException | str, limit: int = 300) -> str:
    """The first non-empty line of an error's message (its type name when the message is empty), cut to ``limit``."""
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else (type(e).__name__ if isinstance(e, BaseException) else "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


# What the machine (not the code) is telling us when a write fails; each with what to do about it.
_OS_HINTS = {
    _errno.ENOSPC: "the disk is full: free space and re-run the same command (finished work is kept)",
    _errno.EDQUOT: "the disk quota is exceeded: free space and re-run the same command (finished work is kept)",
    _errno.EROFS: "the file system is read-only: choose a writable folder",
    _errno.EACCES: "permission denied: choose a folder you can write, or fix its permissions",
    _errno.EPERM: "operation not permitted: choose a folder you can write, or fix its permissions",
    _errno.EISDIR: "it is a directory: name a file",
    _errno.ENOTDIR: "a part of the path is a file, not a directory",
    _errno.ENAMETOOLONG: "the name is too long",
    _errno.EFBIG: "the file is too large for this file system",
    _errno.EIO: "input/output error: the disk or the network file system failed",
}


def os_error(e: OSError, action: str = "write", path: str | os.PathLike | None = None) -> UserError:
    """An OS error on a file as one line: ``cannot write PATH: No space left on device (ENOSPC): <what to do>``."""
    where = path if path is not None else (e.filename or "a file")
    name = _errno.errorcode.get(e.errno or 0, "")
    why = e.strerror or first_line(e)
    hint = _OS_HINTS.get(e.errno or -1)
    return UserError(f"cannot {action} {where}: {why}{f' ({name})' if name else ''}{f'; {hint}' if hint else ''}")
