"""The one validation pass before anything runs: every mistake a run could hit later is found here, in seconds.

``validate_run`` checks the resolved config against its schema, the output folder, every model (local folder or
hub id), the generation backend, the judge's API key and every task's and the training set's data (loaded and
validated row by row). A problem raises a one-line :class:`~core.errors.UserError` before the run directory is
created.

With ``--dry-run`` the plan may be made on another machine than the run (a laptop planning a GPU job), so what
depends on this machine (a hub model or data set not reachable offline, a data file not here, a backend or API key
not present here) is returned as a warning for the plan instead; mistakes in the input itself (bad values,
malformed rows in a file that is there, a malformed model name) fail the dry run too.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlparse

from core.errors import UserError
from core.io import model_dir_problem
from core.registry import nearest
from sftmix.config import validate_config
from sftmix.hub import offline
from sftmix.presets import PRESETS, resolve_model
from sftmix.sources import BUNDLED
from sftmix.splits import EmptySplit

from .rundir import RunDir

LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


class EnvironmentProblem(UserError):
    """Something this machine lacks (not a mistake in the input): a warning in a dry run, an error otherwise."""


def _offline() -> bool:
    """Offline by the variables, or (probed once per process) because the hub cannot be reached."""
    return offline()


def check_model(name: str, what: str = "model.model") -> None:
    """A preset, an existing local model folder, or a well-formed hub id (cached, when offline)."""
    if name in PRESETS:
        return
    resolve_model(name)  # a near-miss of a preset name: "unknown model preset ..., did you mean ..."
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise UserError(f"{what}: {name} is not a model folder (no config.json in it)")
        damaged = model_dir_problem(path)
        if damaged and RunDir.of_model_dir(path) is None:  # a run's own trained variant is trained again instead
            raise UserError(f"{what}: {name} cannot be loaded: {damaged}")
        return
    looks_local = name.startswith(("/", ".", "~")) or name.endswith("/") or name.count("/") > 1
    if looks_local:
        raise UserError(f"{what}: local model folder {name} does not exist")
    # start-up cost: huggingface_hub's client (~0.1-0.2 s) only for a hub id; bench status imports this module
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id  # start-up cost, as above

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UserError(f"{what}: {name!r} is neither a model preset ({', '.join(PRESETS)}), an existing local "
                        "folder nor a hub id (owner/name)") from None
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # in the local cache: usable online and offline
    what_it_is = f"hub model {name!r}" if "/" in name else \
        f"{name!r} is not a preset ({', '.join(PRESETS)}) or a local folder, and as a hub id it"
    if _offline():
        raise EnvironmentProblem(f"{what}: {what_it_is} is not in the local Hugging Face cache and the hub is not "
                                 "reachable (HF_HUB_OFFLINE, or no network): download it first, or pass a local "
                                 "folder")
    _check_on_hub(name, what, what_it_is)


def _check_on_hub(name: str, what: str, what_it_is: str) -> None:
    """Online: ask the hub once whether the model exists, so a typo is one line before anything is created."""
    from huggingface_hub import HfApi  # start-up cost, as in check_model
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError  # start-up cost, as in check_model

    try:
        HfApi().model_info(name, timeout=10)
    except GatedRepoError:
        return  # it exists; access is the download's business (a token), checked when it is loaded
    except RepositoryNotFoundError:
        raise UserError(f"{what}: {what_it_is} does not exist on the Hugging Face hub (or is private and no token "
                        "is set): check the name") from None
    except Exception:  # noqa: BLE001 - a network hiccup is not a verdict on the name: loading will tell
        return


def check_backend(backend: str) -> None:
    if backend == "vllm" and importlib.util.find_spec("vllm") is None:
        raise EnvironmentProblem("generation.backend is vllm but vLLM is not installed here: "
                                 "pip install 'sftmix-bench[vllm]' (Linux + GPU), or use --backend hf")


def check_judge_url(base_url: str | None) -> None:
    """An http(s) URL with a host (and a valid port), e.g. ``http://127.0.0.1:8000/v1``."""
    if base_url is None:
        return
    try:
        url = urlparse(base_url)
        url.port  # noqa: B018 - raises on a malformed port
        ok = url.scheme in ("http", "https") and bool(url.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise UserError(f"judge base URL {base_url!r} is not an http(s) URL with a host, e.g. "
                        "http://127.0.0.1:8000/v1")


def check_contamination(method: str) -> None:
    if method == "minhash" and importlib.util.find_spec("datasketch") is None:
        raise EnvironmentProblem("contamination.method is minhash but datasketch is not installed here: "
                                 "pip install 'sftmix-bench[contamination]', or use contamination.method=ngram")


def check_judge_key(model: str | None, base_url: str | None, api_key_env: str) -> None:
    """An API judge needs its key unless it is served on this machine (a local `vllm serve` needs none)."""
    if not model or os.environ.get(api_key_env):
        return
    host = urlparse(base_url).hostname if base_url else None
    if host in LOOPBACK:
        return
    raise EnvironmentProblem(f"judge {model} at {base_url or 'api.openai.com'} needs an API key: set ${api_key_env} "
                             "(or name another variable with judge.api_key_env / --api-key-env)")


def check_out(out: Path | str) -> None:
    if str(out).strip() in ("", "."):
        raise UserError("--out is empty: name a results folder (the current directory is never used as one)")
    try:
        str(out).encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 in the name: tokenizers and JSON records cannot hold it
        shown = str(out).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise UserError(f"--out {shown}: the path is not UTF-8 text; choose a name in UTF-8") from None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory: choose a folder (it is created if absent)")


def validate_run(cfg, runner, *, dry_run: bool = False) -> list[str]:
    """Validate ``cfg`` for ``runner``'s pending stages; return warnings (dry run only), raise on errors."""
    warnings: list[str] = []

    def soft(check, *args) -> None:
        try:
            check(*args)
        except EnvironmentProblem as e:
            if not dry_run:
                raise
            warnings.append(str(e))

    validate_config(cfg)
    check_out(cfg.run.out)
    from .tables.layouts import LAYOUTS  # start-up cost: imports numpy, pandas

    if cfg.run.layout not in LAYOUTS:  # found now, not after hours of training when the table is written
        raise UserError(f"unknown run.layout {cfg.run.layout!r}{nearest(cfg.run.layout, LAYOUTS)}; choose from "
                        f"{', '.join(LAYOUTS)}")
    ctx = runner.ctx
    pending = {s.name for s in runner.stages if runner.status(s) != "done"}
    soft(check_model, cfg.model.model, "model.model")
    for v in ctx.variants:
        if v.reference_model:
            soft(check_model, v.reference_model, f"variant {v.name}: reference_model")
    if any(p.startswith("generate/") for p in pending):
        soft(check_backend, cfg.generation.backend)
    if "contamination" in pending:
        soft(check_contamination, cfg.contamination.method)
    judged = [t for t in ctx.tasks if ctx.scorer(t).judged and any(p == f"score/{v.name}/{t.name}"
                                                               for v in ctx.variants for p in pending)]
    if cfg.judge.model:
        check_judge_url(cfg.judge.base_url)
    if judged and cfg.judge.model:
        soft(check_judge_key, cfg.judge.model, cfg.judge.base_url, cfg.judge.api_key_env)
    if judged and cfg.judge.local:
        soft(check_model, cfg.judge.local, "judge.local")
    for task in ctx.tasks:
        if not any(p.endswith(f"/{task.name}") for p in pending):
            continue
        local = cfg.run.data_paths.get(task.name) or task.data.get("local")
        try:
            task.check_renders(ctx.items(task))  # loads, normalises, checks every row; renders every prompt
        except UserError as e:
            # A file that is there but wrong is a mistake; one that is absent may live on the machine of the run.
            # An empty bucket is a mistake wherever the data is.
            if not dry_run or isinstance(e, EmptySplit) or (local and Path(local).expanduser().exists()):
                raise
            warnings.append(f"{e} (the plan counts {task.name} from its declared size)")
    for name in cfg.run.data_paths:
        if name not in {t.name for t in ctx.tasks}:
            raise UserError(f"run.data_paths names task {name!r}, which is not in run.tasks")
    if any(p.startswith(("dynamics", "train/")) for p in pending):
        from sftmix.data import load_rows  # heavy: imports torch

        try:
            load_rows(cfg.data.data, split=cfg.data.split, limit=cfg.data.max_examples)
        except UserError as e:
            here = Path(BUNDLED.get(cfg.data.data, cfg.data.data)).expanduser().exists()
            if not dry_run or isinstance(e, EmptySplit) or here:
                raise
            warnings.append(str(e))
    return warnings
