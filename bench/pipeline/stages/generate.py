"""The generation stage: one variant's completions for one task, through the configured backend."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sftmix.variants import Variant

from ...backends import get_backend
from ...backends.base import takes_on_result
from ...generate import generate_task
from ..context import RunContext

if TYPE_CHECKING:
    from ...tasks import Task


def generate_stage(ctx: RunContext, v: Variant, task: Task) -> None:
    """Generate ``v``'s answers to ``task``'s items (cached ones are served by the run's cache)."""
    g = ctx.cfg.generation
    override = {k: val for k, val in (("max_new_tokens", g.max_new_tokens), ("temperature", g.temperature))
                if val is not None}
    override["greedy"] = not g.mt_bench_category_temperatures
    if ctx.backend_of is None or ctx.backend_of[0] != v.name:
        ctx.backend_of = None  # release the previous variant's model before loading the next
        ctx.backend_of = (v.name, _backend(ctx, v))
    generate_task(task, ctx.items(task), ctx.backend_of[1], model_id=f"{ctx.cfg.run.name}/{v.name}",
                  out=ctx.gen_path(v, task), cache=ctx.cache, settings=override)


def _backend(ctx: RunContext, v: Variant) -> "Counting":
    g = ctx.cfg.generation
    opts: dict[str, Any] = {"template": ctx.cfg.model.template}
    if g.backend == "hf":
        opts["batch_size"] = g.batch_size
        opts["share_prefix"] = g.share_prefix
    elif g.backend == "vllm":
        opts["tensor_parallel_size"] = g.tensor_parallel_size
    return Counting(get_backend(g.backend, str(ctx.model_dir(v)), **opts), ctx.counters)


class Counting:
    """Backend proxy that counts model requests (cache misses reach the backend, hits don't)."""

    def __init__(self, backend, counters: dict):
        self._b, self._c = backend, counters
        self.name = backend.name

    def generate(self, requests, on_result=None):
        self._c["model_requests"] += len(requests)
        if on_result is not None and takes_on_result(self._b):
            return self._b.generate(requests, on_result=on_result)
        return self._b.generate(requests)

    def loglikelihood(self, requests):
        self._c["model_requests"] += len(requests)
        return self._b.loglikelihood(requests)

    def __getattr__(self, name):
        return getattr(self._b, name)
