"""Generate a task's answers with a backend, through the content-addressed cache, into a JSONL file.

This step knows no benchmark kind: the task's scorer says which requests each item needs (generations,
log-likelihoods of continuations; :meth:`bench.scorers.Scorer.model_requests`), step by step - a chat's turn 2 is
asked with the model's *own* turn-1 answer (MT-Bench's protocol) - and which fields each answered request's record
carries (:meth:`~bench.scorers.Scorer.generation_fields`). Every step's requests run as one batch per request type.
Cached results are reused, so a second identical call sends nothing to the backend.
"""
from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from bench.backends.base import Backend, Generation, GenRequest, LoglikRequest, takes_on_result
from bench.cache import Cache
from bench.rundir.generations import GenerationRecord, scorer_fields, write_generations
from bench.scorers import get_scorer
from bench.scorers.base import RequestOptions
from bench.tasks import Task
from core.errors import Interrupted, UserError
from core.io import hash_file, hash_obj

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
IDENTITY_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "tokenizer.json",
                  "chat_template.jinja", "adapter_config.json")
_SAMPLED_ABOVE = 1 << 30  # weights over 1 GiB: hash size + 64 spread 1 MiB blocks instead of every byte


def _sampled_hash(path: Path) -> str:
    size = path.stat().st_size
    if size <= _SAMPLED_ABOVE:
        return hash_file(path)
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
            from huggingface_hub import try_to_load_from_cache  # deferred: only a hub id (no local folder) needs it

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
    def keep(j: int, gen: Generation) -> None:
        i = todo[j]
        found[i] = {"text": gen.text, "prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens}
        if getattr(gen, "prompt_cut", 0):  # only when it happened: other entries keep their old shape
            found[i]["prompt_cut"] = gen.prompt_cut
        if getattr(gen, "max_new_tokens", None) is not None:
            found[i]["max_new_tokens"] = gen.max_new_tokens
        if cache is not None:
            cache.put("gen", keys[i], found[i])

    if todo:
        batch = [requests[i] for i in todo]
        try:
            if takes_on_result(backend):  # cached batch by batch: a Ctrl-C keeps what was generated
                fresh = backend.generate(batch, on_result=keep)
            else:
                fresh = backend.generate(batch)
        except KeyboardInterrupt:
            kept = sum(found[i] is not None for i in todo)
            raise Interrupted(f"interrupted: {kept} of the {len(todo)} generations in progress are kept in the "
                              "cache; re-run the same command to generate only the rest") from None
        for j, gen in enumerate(fresh):
            if found[todo[j]] is None:
                keep(j, gen)
    known = {"text", "prompt_tokens", "completion_tokens", "prompt_cut", "max_new_tokens"}
    return [Generation(**{k: x for k, x in v.items() if k in known}) for v in found]


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


def generate_task(task: Task, items: list[dict], backend: Backend, *, model_id: str,
                  out: str | os.PathLike | None = None, cache: Cache | None = None, settings: dict | None = None,
                  repeat: int = 0) -> list[GenerationRecord]:
    """Execute the model requests the task's scorer asks for ``items`` (:meth:`Task.load_records`), through the
    ``cache``; write one generations record per answered request to ``out`` atomically
    (:mod:`bench.rundir.generations`) and return them (the records scorers read).

    ``model_id`` names the model in the records; ``settings`` holds GenSettings fields plus ``greedy`` (MT-Bench
    per-category temperatures when False) and kind-specific switches (``mcq_mode``: loglik | generate); ``repeat``
    is the sample index, part of every cache key.
    """
    scorer = get_scorer(task.scorer)
    options = RequestOptions(dict(settings or {}), _chat_prompt(task, backend))
    identity = _backend_identity(backend, model_id)
    base = {"task": task.name, "model": model_id, "backend": backend.name, "prompt_hash": task.prompt_hash,
            "data_hash": task.data_hash, "repeat": repeat}
    answers: dict[str, list] = {it["id"]: [] for it in items}
    records: list[GenerationRecord] = []
    pending, step = list(items), 0
    while pending:  # step by step: a request may need an item's earlier answers (a chat's turn 2)
        asked = [(it, req) for it in pending
                 for req in scorer.model_requests(task, it, step, answers[it["id"]], options)]
        gen = [k for k, (_, r) in enumerate(asked) if isinstance(r, GenRequest)]
        ll = [k for k, (_, r) in enumerate(asked) if isinstance(r, LoglikRequest)]
        if len(gen) + len(ll) != len(asked):
            bad = next(r for _, r in asked if not isinstance(r, (GenRequest, LoglikRequest)))
            raise TypeError(f"scorer {scorer.name!r} asked for {type(bad).__name__}; a backend answers GenRequest "
                            "and LoglikRequest")
        done: list = [None] * len(asked)  # one batch per request type, the answers back in request order
        for k, answer in zip(gen, _generate_cached(backend, identity, [asked[k][1] for k in gen], cache, repeat)):
            done[k] = answer
        for k, answer in zip(ll, _loglik_cached(backend, identity, [asked[k][1] for k in ll], cache)):
            done[k] = answer
        for (it, req), answer in zip(asked, done):
            answers[it["id"]].append(answer)
            records.append(GenerationRecord(**base, example_id=it["id"], turn=step, category=it["category"],
                                            **_answered(req, answer),
                                            **scorer_fields(scorer.generation_fields(task, it, req, answer, options),
                                                            scorer.name)))
        pending = list({id(it): it for it, _ in asked}.values())
        step += 1
    order = {it["id"]: k for k, it in enumerate(items)}
    records.sort(key=lambda r: (order[r.example_id], r.turn))  # item-major in the file
    _warn_context(task, records)
    if out is not None:
        write_generations(Path(out), records)
    return records


def _answered(req: GenRequest | LoglikRequest, answer: Generation | list[float]) -> dict:
    """A request and its answer as generations-record fields."""
    if isinstance(req, LoglikRequest):
        return {"context": req.context, "continuations": req.continuations, "logliks": answer}
    out = {"settings": {**req.settings.to_dict(), "stop": list(req.settings.stop)}, "text": answer.text,
           "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
           "messages": req.messages}
    if answer.prompt_cut or answer.max_new_tokens is not None:  # the model's context was too short
        out["context_fit"] = {"prompt_cut": answer.prompt_cut,
                              "max_new_tokens": answer.max_new_tokens or req.settings.max_new_tokens}
    return out


def _warn_context(task: Task, records: list[GenerationRecord]) -> None:
    """One line per task when prompts did not fit the model's context (cut on the left, answers capped)."""
    fits = [(r.context_fit, r.settings) for r in records if r.context_fit]
    if not fits:
        return
    cut = [f["prompt_cut"] for f, _ in fits if f["prompt_cut"]]
    capped = [f["max_new_tokens"] for f, s in fits if f["max_new_tokens"] < s["max_new_tokens"]]
    parts = []
    if cut:
        parts.append(f"{len(cut)} of {len(records)} prompts cut on the left to fit the model's context (up to "
                     f"{max(cut):,} tokens dropped)")
    if capped:
        parts.append(f"{len(capped)} answers capped below max_new_tokens (down to {min(capped)}) by the context")
    print(f"bench: warning: {task.name}: {'; '.join(parts)}; each such record says so in 'context_fit'",
          file=sys.stderr, flush=True)


def _chat_prompt(task: Task, backend: Backend) -> Callable[[list[dict]], str]:
    """The backend's chat template, for scorers that score a context in chat form (mcq with chat_template)."""
    render = getattr(backend, "chat_prompt", None)
    if render is not None:
        return render

    def missing(messages: list[dict]) -> str:
        raise UserError(f"task {task.name}: chat_template needs a backend with chat_prompt(); {backend.name} has none")

    return missing


def record_metrics(task: Task, records: list[GenerationRecord]) -> dict[str, Any] | None:
    """Metrics of a task whose scorer needs no judge (mcq, exact, perplexity, ...), from its generation records
    (what `bench generate` writes to ``<task>.scores.json``); None for judged tasks."""
    scorer = get_scorer(task.scorer)
    if scorer.judged:
        return None
    first = records[0] if records else GenerationRecord("", "")
    result = scorer.score(task, [], records, [])
    return {"task": task.name, "scorer": scorer.name, "scorer_version": scorer.version, "model": first.model,
            "backend": first.backend, "data_hash": task.data_hash, "prompt_hash": task.prompt_hash,
            "source": task.source, "primary": scorer.primary, "n": len(records), **result.metrics,
            "protocol": result.info.get("protocol")}
