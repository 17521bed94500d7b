"""The ``hf`` backend: ``transformers`` generate, batched with left padding; the CPU default.

Prompts are the model's chat template (``apply_chat_template(add_generation_prompt=True)``), or a named template
from :mod:`sftmix.templates` for base models. Requests are grouped by settings and sorted by length so a batch
wastes little padding. ``completion_tokens`` excludes the EOS token. With sampling, ``torch.manual_seed(seed)``
is set before each batch, so results repeat for the same requests and batch size.
"""
from __future__ import annotations

import inspect
from collections import defaultdict
from dataclasses import replace
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import UserError, first_line
from sftmix.templates import apply_template

from .base import Generation, GenRequest, GenSettings, LoglikRequest, fit_prompt


def _resolve_dtype(dtype: Any, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        # bf16 only where the hardware has it: on CPU without native bf16 it is several times slower.
        return torch.bfloat16 if device.startswith("cuda") and torch.cuda.is_bf16_supported() else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[str(dtype)]
    except KeyError:
        raise UserError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)") from None


class HFBackend:
    """Chat generation and option log-likelihoods with a ``transformers`` causal LM."""

    name = "hf"

    def __init__(self, model_path: str, device: str | None = None, dtype: Any = None, batch_size: int = 8,
                 template: str | None = None, progress: bool = True, model=None, tokenizer=None,
                 share_prefix: bool = False):
        self.model_path = str(model_path)
        self.share_prefix = share_prefix
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        self.progress = progress
        self.template = template
        try:
            self.tokenizer = tokenizer or AutoTokenizer.from_pretrained(self.model_path)
            self.model = model or AutoModelForCausalLM.from_pretrained(
                self.model_path, dtype=_resolve_dtype(dtype, self.device))
            self.dtype = str(self.model.dtype).removeprefix("torch.")
        except OSError as e:
            raise UserError(f"cannot load model {self.model_path!r}: {first_line(e)}") from None
        self.model.to(self.device).eval()
        if template:
            apply_template(self.tokenizer, template)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = set(eos) | ({self.tokenizer.eos_token_id} - {None})

    # ---------------------------------------------------------------- generation
    def chat_prompt(self, messages: list[dict]) -> str:
        """``messages`` rendered with the chat template, ending with the assistant's turn opening."""
        if not self.tokenizer.chat_template:
            raise UserError(f"{self.model_path} has no chat template; pass --template (alpaca, chatml, ...)")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def generate(self, requests: list[GenRequest], on_result=None) -> list[Generation]:
        """Answers in request order. A prompt that does not fit the model's context with its answer is cut on the
        left (:func:`~bench.backends.base.fit_prompt`); each Generation says how much was cut. ``on_result(i,
        generation)`` is called as each batch finishes (the caller caches them, so an interrupt loses one batch)."""
        prompts = [self.chat_prompt(r.messages) for r in requests]
        context = max_length(self.model.config, self.tokenizer)
        fitted = [fit_prompt(ids, context, r.settings.max_new_tokens)
                  for ids, r in zip(self.tokenizer(prompts, add_special_tokens=False).input_ids, requests)]
        groups: dict[GenSettings, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):  # a capped answer length is a group of its own
            groups[replace(r.settings, max_new_tokens=fitted[i][2])].append(i)
        out: list[Generation | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), desc="hf generate", disable=not self.progress, leave=False)
        for settings, idx in groups.items():
            idx.sort(key=lambda i: -len(fitted[i][0]))  # similar lengths together: less padding per batch
            for start in range(0, len(idx), self.batch_size):
                batch = idx[start:start + self.batch_size]
                for i, gen in zip(batch, self._generate_batch([fitted[i][0] for i in batch], settings)):
                    gen.prompt_cut = fitted[i][1]
                    if fitted[i][2] != requests[i].settings.max_new_tokens:
                        gen.max_new_tokens = fitted[i][2]
                    out[i] = gen
                    if on_result is not None:
                        on_result(i, gen)
                bar.update(len(batch))
        bar.close()
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], s: GenSettings) -> list[Generation]:
        tok = self.tokenizer
        tok.padding_side = "left"  # generation appends on the right, so prompts must end at the same column
        enc = tok.pad({"input_ids": prompts}, return_tensors="pt", padding=True).to(self.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=s.max_new_tokens, pad_token_id=tok.pad_token_id,
                                      eos_token_id=sorted(self.eos_ids))
        if s.temperature > 0:
            torch.manual_seed(s.seed)
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if s.stop:
            kwargs.update(stop_strings=list(s.stop), tokenizer=tok)
        seqs = self.model.generate(**enc, **kwargs)[:, enc.input_ids.shape[1]:].tolist()
        results = []
        for prompt_ids, ids in zip(enc.attention_mask.sum(1).tolist(), seqs):
            n = next((k for k, t in enumerate(ids) if t in self.eos_ids), len(ids))
            text = tok.decode(ids[:n], skip_special_tokens=True)
            cut = min((p for p in (text.find(x) for x in s.stop) if p >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                n = len(tok(text, add_special_tokens=False).input_ids)
            results.append(Generation(text=text, prompt_tokens=int(prompt_ids), completion_tokens=n))
        return results

    # ---------------------------------------------------------------- log-likelihood
    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        # lm-eval's split: tokenize context+continuation together and take the continuation tokens as what
        # follows the context's own tokens, so a merge across the boundary is scored as the model would see it.
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        tok = self.tokenizer
        special = not (tok.bos_token and context.startswith(tok.bos_token))  # a chat-rendered context has its BOS
        whole = tok(context + continuation, add_special_tokens=special).input_ids
        ctx = tok(context, add_special_tokens=special).input_ids
        if not ctx:  # nothing to condition on: start from BOS (or EOS), as lm-eval does
            prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            return [prefix], whole
        return ctx, whole[len(ctx):]

    @torch.no_grad()
    def loglikelihood(self, requests: list[LoglikRequest]) -> list[list[float]]:
        """Summed log-probability of each continuation's tokens given its context.

        With ``share_prefix`` a request whose continuations all follow the same context tokens runs that context
        once and scores every continuation from a copy of its KV cache (:meth:`_loglik_shared`): the same numbers up
        to float rounding, at about 1/n of the cost for n options with a long context."""
        pairs = []  # (request index, choice index, context ids, continuation ids)
        max_len = max_length(self.model.config, self.tokenizer)
        for ri, r in enumerate(requests):
            for ci, cont in enumerate(r.continuations):
                ctx_ids, cont_ids = self._encode_pair(r.context, cont)
                if not cont_ids:
                    raise UserError(f"item {r.example_id}: choice {cont!r} encodes to no tokens")
                if len(cont_ids) > max_len:  # the context is cut on the left (lm-eval); a choice cannot be
                    raise UserError(f"item {r.example_id}: a choice of {len(cont_ids)} tokens is longer than the "
                                    f"model's context ({max_len} tokens)")
                pairs.append((ri, ci, ctx_ids, cont_ids))
        scores = [[0.0] * len(r.continuations) for r in requests]
        if self.share_prefix:
            pairs = self._score_shared(pairs, scores, max_len)
        pairs.sort(key=lambda p: -(len(p[2]) + len(p[3])))
        bar = tqdm(total=len(pairs), desc="hf loglikelihood", disable=not self.progress, leave=False)
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start:start + self.batch_size]
            for (ri, ci, _, _), value in zip(batch, self._loglik_batch([(c, k) for _, _, c, k in batch], max_len)):
                scores[ri][ci] = value
            bar.update(len(batch))
        bar.close()
        return scores

    def _score_shared(self, pairs: list, scores: list[list[float]], max_len: int) -> list:
        """Score the requests whose continuations share their context tokens (and fit ``max_len``) into
        ``scores``; return the other pairs, for the per-pair path."""
        by_request: dict[int, list] = {}
        for p in pairs:
            by_request.setdefault(p[0], []).append(p)
        rest = []
        bar = tqdm(total=len(by_request), desc="hf loglikelihood (shared prefix)", disable=not self.progress,
                   leave=False)
        for ri, group in by_request.items():
            ctx = group[0][2]
            if any(p[2] != ctx for p in group) or len(ctx) + max(len(p[3]) for p in group) - 1 > max_len:
                rest += group
            else:
                for (_, ci, _, _), value in zip(group, self._loglik_shared(ctx, [p[3] for p in group])):
                    scores[ri][ci] = value
            bar.update(1)
        bar.close()
        return rest

    def _loglik_shared(self, ctx: list[int], conts: list[list[int]]) -> list[float]:
        """Each continuation's summed log-probability after ``ctx``: one pass over the context with its KV cache,
        whose last position scores every continuation's first token; the cache repeated once per continuation
        longer than one token, which then runs its remaining tokens (right-padded: causal attention never looks at
        the padding)."""
        dev = self.device
        out = self.model(input_ids=torch.tensor([ctx], device=dev), use_cache=True, logits_to_keep=1)
        first = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        values = [float(first[c[0]]) for c in conts]
        longer = [i for i, c in enumerate(conts) if len(c) > 1]
        if not longer:
            return values
        width = max(len(conts[i]) - 1 for i in longer)
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(longer))
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([conts[i][:-1] + [pad] * (width - len(conts[i]) + 1) for i in longer], device=dev)
        mask = torch.ones(len(longer), len(ctx) + width, dtype=torch.long, device=dev)
        for row, i in enumerate(longer):
            mask[row, len(ctx) + len(conts[i]) - 1:] = 0
        positions = torch.arange(len(ctx), len(ctx) + width, device=dev).expand(len(longer), -1)
        # transformers renamed past_key_values to cache (5.2x); pass the name this model's forward takes
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False,
                            **{name: cache}).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for row, i in enumerate(longer):
            target = torch.tensor(conts[i][1:], device=dev)
            values[i] += float(logprobs[row, :len(target)].gather(-1, target[:, None]).sum())
        return values

    def _loglik_batch(self, batch: list[tuple[list[int], list[int]]], max_len: int) -> list[float]:
        # lm-eval's input: (context + continuation)[-(max_len + 1):][:-1] - the last token is only ever a target,
        # so an over-long context keeps max_len tokens of conditioning. Left padding puts every continuation at the
        # right edge, so only the last K positions' logits (K = longest continuation) are needed: the
        # full-vocabulary logits of long contexts never exist.
        seqs = [(ctx + cont)[-(max_len + 1):][:-1] for ctx, cont in batch]
        width = max(len(s) for s in seqs)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = max(len(cont) for _, cont in batch)
        try:
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                logits_to_keep=keep).logits
        except TypeError:  # an architecture without logits_to_keep
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -keep:]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        out = []
        for row, (_, cont) in enumerate(batch):
            n = len(cont)
            target = torch.tensor(cont, device=self.device)
            # the last position predicts the final continuation token; positions keep-n .. keep-1 predict cont
            lp = logprobs[row, keep - n: keep].gather(-1, target[:, None]).squeeze(-1)
            out.append(float(lp.sum()))
        return out


TOKENIZER_INFINITY = 1000000000000000019884624838656  # transformers' "no limit" model_max_length


def max_length(config, tokenizer=None, default: int = 2048) -> int:
    """The context length lm-eval's HFLM uses: the text config's n_positions / max_position_embeddings / n_ctx,
    else the tokenizer's model_max_length, else 2048."""
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit is not None and limit != TOKENIZER_INFINITY else default
