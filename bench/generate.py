"""Generate a task's answers with a backend, through the content-addressed cache, into a JSONL file.

Chat tasks are generated turn by turn: every item's turn 1 first, then turn 2 with the model's *own* turn-1
answer in the conversation (MT-Bench's protocol). MCQ tasks score each option by log-likelihood (or, with
``mcq_mode=generate``, generate and parse the letter); exact tasks generate and score by exact match. Cached
results are reused, so a second identical call sends nothing to the backend.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.backends.base import Backend, Generation, GenRequest, LoglikRequest
from bench.cache import Cache
from bench.scorers import exact as exact_scorer
from bench.scorers import get_scorer
from bench.scorers import mcq as mcq_scorer
from bench.tasks import Task
from sftmix.io import atomic_path, hash_file, hash_obj, stable_json

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
IDENTITY_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
                  "chat_template.jinja", "adapter_config.json")
_SAMPLED_ABOVE = 1 << 30  # weights over 1 GiB: hash size + 64 spread 1 MiB blocks instead of every byte


def _sampled_hash(path: Path) -> str:
    size = path.stat().st_size
    if size <= _SAMPLED_ABOVE:
        return hash_file(path)
    import hashlib

    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        for k in range(64):
            f.seek(k * (size - (1 << 20)) // 63)
            h.update(f.read(1 << 20))
    return h.hexdigest()[:16]


@lru_cache(maxsize=32)
def model_fingerprint(model_path: str, revision: str | None = None) -> str:
    """Content hash of a model folder (config, tokenizer files, weights), or hub id + revision for a hub model.

    For a hub id the revision is, in order: ``revision``, the snapshot commit in the local HF cache, "main".
    """
    path = Path(model_path)
    if path.is_dir():
        files = {p.name: hash_file(p) for p in sorted(path.iterdir()) if p.name in IDENTITY_FILES}
        weights = {p.name: _sampled_hash(p) for p in sorted(path.iterdir()) if p.suffix in WEIGHT_SUFFIXES}
        return hash_obj({"files": files, "weights": weights})
    if path.is_file():  # e.g. a single GGUF file
        return hash_obj({"file": path.name, "weights": _sampled_hash(path)})
    if revision is None:
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(model_path, "config.json")
            if isinstance(cached, str):
                revision = Path(cached).parent.name  # .../snapshots/<commit>/config.json
        except Exception:
            pass
    return hash_obj({"hub": model_path, "revision": revision or "main"})


def _backend_identity(backend: Backend, model_id: str) -> dict:
    """Everything about the backend that changes its outputs, for cache keys."""
    path = getattr(backend, "model_path", model_id)
    return {"model": model_fingerprint(str(path)), "backend": backend.name,
            "template": getattr(backend, "template", None), "dtype": getattr(backend, "dtype", None)}


def _generate_cached(backend: Backend, identity: dict, requests: list[GenRequest], cache: Cache | None,
                     repeat: int) -> list[Generation]:
    keys = [hash_obj({**identity, "messages": r.messages, "settings": r.settings.to_dict(), "repeat": repeat})
            for r in requests]
    found = [cache.get("gen", k) if cache is not None else None for k in keys]
    todo = [i for i, v in enumerate(found) if v is None]
    if todo:
        fresh = backend.generate([requests[i] for i in todo])
        for i, gen in zip(todo, fresh):
            found[i] = {"text": gen.text, "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
            if cache is not None:
                cache.put("gen", keys[i], found[i])
    return [Generation(**v) for v in found]


def _loglik_cached(backend: Backend, identity: dict, requests: list[LoglikRequest],
                   cache: Cache | None) -> list[list[float]]:
    keys = [hash_obj({**identity, "context": r.context, "continuations": r.continuations}) for r in requests]
    found = [cache.get("loglik", k) if cache is not None else None for k in keys]
    todo = [i for i, v in enumerate(found) if v is None]
    if todo:
        for i, lls in zip(todo, backend.loglikelihood([requests[i] for i in todo])):
            found[i] = [float(x) for x in lls]
            if cache is not None:
                cache.put("loglik", keys[i], found[i])
    return found  # type: ignore[return-value]


def generate_task(task: Task, backend: Backend, model_id: str, out_path: str | os.PathLike | None,
                  cache: Cache | None, limit: int | None = None, settings_override: dict | None = None,
                  local: str | os.PathLike | None = None, repeat: int = 0, items: list[dict] | None = None) -> list[dict]:
    """Run one task with one backend; write JSONL records to ``out_path`` atomically and return them.

    ``items`` (already loaded, e.g. a filtered subset) replaces loading the task's records with ``limit``/``local``.
    ``settings_override`` holds GenSettings fields plus ``greedy`` (MT-Bench per-category temperatures when
    False) and ``mcq_mode`` (loglik | generate). ``repeat`` is the sample index, part of every cache key.
    """
    override = dict(settings_override or {})
    mcq_mode = override.pop("mcq_mode", task.mcq_mode)
    if items is None:
        items = task.load_records(limit=limit, local=local)
    identity = _backend_identity(backend, model_id)
    base = {"task": task.name, "model": model_id, "backend": backend.name, "prompt_hash": task.prompt_hash,
            "data_hash": task.data_hash, "repeat": repeat}

    records: list[dict] = []
    if task.kind == "mcq" and mcq_mode == "loglik":
        contexts = [_mcq_context(task, backend, it) for it in items]
        requests = [LoglikRequest(it["id"], ctx, task.continuations(it)) for it, ctx in zip(items, contexts)]
        for it, req, lls in zip(items, requests, _loglik_cached(backend, identity, requests, cache)):
            records.append({**base, "example_id": it["id"], "turn": 0, "category": it["category"],
                            "scoring": "loglik", "context": req.context, "continuations": req.continuations,
                            "logliks": lls, "answer": it["answer"],
                            **mcq_scorer.score_logliks(lls, req.continuations, it["answer"], task.target_delimiter)})
    else:
        answers: dict[str, list[str]] = {it["id"]: [] for it in items}
        n_turns = max(len(it["turns"]) for it in items) if task.kind == "chat" and items else 1
        for turn in range(n_turns):
            batch = [it for it in items if task.kind != "chat" or turn < len(it["turns"])]
            requests = [GenRequest(task.name, it["id"], turn, task.messages(it, turn, answers[it["id"]]),
                                   task.settings(it, override)) for it in batch]
            for it, req, gen in zip(batch, requests, _generate_cached(backend, identity, requests, cache, repeat)):
                answers[it["id"]].append(gen.text)
                rec = {**base, "example_id": it["id"], "turn": turn, "category": it["category"],
                       "settings": {**req.settings.to_dict(), "stop": list(req.settings.stop)}, "text": gen.text, "prompt_tokens": gen.prompt_tokens,
                       "completion_tokens": gen.completion_tokens, "messages": req.messages}
                # chat: this turn's reference answer (MT-Bench's GPT-4 answer, AlpacaEval's baseline output)
                refs = it.get("reference") if task.kind == "chat" else None
                if refs and turn < len(refs) and refs[turn] is not None:
                    rec["reference"] = refs[turn]
                if task.kind == "mcq":
                    pred = mcq_scorer.parse_letter(gen.text, len(it["choices"]), "".join(task.labels))
                    rec.update(scoring="generate", answer=it["answer"], pred=pred, acc=float(pred == it["answer"]))
                elif task.kind == "exact":
                    rec.update(answer=it["answer"], **exact_scorer.score(gen.text, it["answer"]))
                records.append(rec)
        order = {it["id"]: k for k, it in enumerate(items)}
        records.sort(key=lambda r: (order[r["example_id"]], r["turn"]))  # item-major in the file

    if out_path is not None:
        with atomic_path(out_path) as tmp:
            tmp.write_text("".join(stable_json(r) + "\n" for r in records), encoding="utf-8")
    return records


def _mcq_context(task: Task, backend: Backend, item: dict) -> str:
    if not task.chat_template:
        return task.render_prompt(item)
    render = getattr(backend, "chat_prompt", None)
    if render is None:
        from sftmix.errors import UserError

        raise UserError(f"task {task.name}: chat_template needs a backend with chat_prompt(); {backend.name} has none")
    return render(task.messages(item))


def record_metrics(task: Task, records: list[dict]) -> dict[str, Any] | None:
    """Metrics of a task whose scorer needs no judge (mcq, exact), from its generation records (what `bench
    generate` writes to ``<task>.scores.json``); None for judged tasks."""
    scorer = get_scorer(task.scorer)
    if scorer.judged:
        return None
    first = records[0] if records else {}
    result = scorer.score(task, [], records, [])
    return {"task": task.name, "scorer": scorer.name, "scorer_version": scorer.version, "model": first.get("model"),
            "backend": first.get("backend"), "data_hash": task.data_hash, "prompt_hash": task.prompt_hash,
            "source": task.source, "primary": scorer.primary, "n": len(records), **result.metrics,
            "protocol": result.info.get("protocol")}


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
