"""Atomic writes and stable hashes: nothing half-written survives a crash, and every artefact can be keyed."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import os_error


def _umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any thread writes files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The one way this project writes a file: a crash, a full disk or a Ctrl-C leaves the old file (or none), never
    half a file. An OS error on the way (ENOSPC, EROFS, EACCES, ``path`` a directory...) becomes a one-line
    :class:`~core.errors.UserError` naming ``path`` and what to do. The file gets the mode a plain ``open()``
    would give (0666 less the umask), not mkstemp's private 0600."""
    path = Path(path)
    if path.is_dir():
        raise os_error(IsADirectoryError(21, "Is a directory"), path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise os_error(e, path=path) from None
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~UMASK)
        os.replace(tmp, path)
    except OSError as e:
        raise os_error(e, path=path) from None
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only or vanished folder: nothing more to clean


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def stable_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)


def hash_obj(obj: Any, n: int = 16) -> str:
    """Short sha256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(stable_json(obj).encode("utf-8")).hexdigest()[:n]


def hash_file(path: str | os.PathLike, n: int = 16) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def package_file(package: str, relative: str) -> Path | None:
    """A data file shipped inside an installed package, found without importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.exists():
            return path
    return None


WEIGHT_SUFFIXES = (".safetensors", ".bin")


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """Why a ``.safetensors`` file cannot be loaded (empty, truncated, damaged header), or None when it is whole.

    Reads only the header: the tensors' byte ranges must end exactly where the file does."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path.name} is truncated ({size:,} bytes; its header alone says {n + 8:,})"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"{path.name} cannot be read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return f"{path.name} is damaged (its header is not valid JSON)"
    if not isinstance(header, dict):
        return f"{path.name} is damaged (its header is not a JSON object)"
    try:
        end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    except (KeyError, TypeError, ValueError, IndexError):
        return f"{path.name} is damaged (a tensor without data_offsets)"
    if 8 + n + end > size:
        return f"{path.name} is truncated ({size:,} of {8 + n + end:,} bytes)"
    return None


def model_dir_problem(path: str | os.PathLike) -> str | None:
    """Why a saved model folder (``save_pretrained`` output, or a PEFT adapter) cannot be loaded, or None.

    Cheap: parses the JSON configs and the weights' headers (safetensors) or zip directories (torch ``.bin``);
    catches a deleted, empty or truncated file (a disk that filled up, a copy that stopped), not a flipped bit."""
    path = Path(path)
    if not path.is_dir():
        return f"{path} is not a folder"
    configs = [path / n for n in ("config.json", "adapter_config.json") if (path / n).exists()]
    if not configs:
        return "config.json is missing"
    for c in configs:
        try:
            json.loads(c.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            return f"{c.name} is damaged (not valid JSON)"
    names = {p.name for p in path.iterdir()}
    for index in sorted(n for n in names if n.endswith(".index.json")):
        try:
            shards = set(json.loads((path / index).read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
            return f"{index} is damaged"
        missing = sorted(shards - names)
        if missing:
            return f"{missing[0]} is missing ({index} lists it)"
    weights = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if not weights:
        return "it holds no weights (*.safetensors or *.bin)"
    for w in weights:
        if w.suffix == ".safetensors":
            why = safetensors_problem(w)
        elif w.stat().st_size == 0 or (_head(w, 2) == b"PK" and not zipfile.is_zipfile(w)):
            why = f"{w.name} is truncated ({w.stat().st_size:,} bytes)"  # torch.save's zip format ends with its index
        else:
            why = None
        if why:
            return why
    return None


def _head(path: Path, n: int) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def file_problem(path: str | os.PathLike) -> str | None:
    """Why a finished record file is damaged (cut short, overwritten, not UTF-8), or None: ``.parquet`` by its magic
    bytes, ``.json`` and ``.jsonl`` by parsing. Other files, and folders, are not checked."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        if path.suffix == ".parquet":
            size = path.stat().st_size
            with open(path, "rb") as f:
                head = f.read(4)
                f.seek(max(0, size - 4))
                tail = f.read(4)
            return None if size >= 12 and head == tail == b"PAR1" else "damaged (not a whole parquet file)"
        if path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return f"damaged (not valid JSON{'-lines' if path.suffix == '.jsonl' else ''})"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return None
