"""An in-process judge: a local ``transformers`` chat model, same prompts, parsers and verdicts as the API judge.

Generation is greedy. Because a greedy re-ask returns the same text, unparsable replies are recorded as failures
at once (``max_parse_retries=0``) unless the caller asks otherwise.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from core.errors import UserError

from .client import BaseJudge, JudgeLogEntry, JudgeRequest


class LocalJudge(BaseJudge):
    """Judge with a local model folder (or hub id already in the local cache) and its chat template."""

    kind = "local"

    def __init__(self, model_path: str | os.PathLike | None = None, *, model=None, tokenizer=None,
                 name: str | None = None, device: str = "cpu", dtype: str = "float32", max_parse_retries: int = 0,
                 cache=None, ledger=None, log_path: str | os.PathLike | None = None):
        super().__init__(cache=cache, ledger=ledger, log_path=log_path)
        if model is None or tokenizer is None:
            if model_path is None:
                raise ValueError("LocalJudge needs model_path or (model, tokenizer)")
            import torch  # torch and transformers take seconds to import: only a local judge model pays them
            from transformers import AutoModelForCausalLM, AutoTokenizer  # (see above)

            tokenizer = AutoTokenizer.from_pretrained(model_path)
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype)).to(device)
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(f"judge model {model_path or 'in memory'} has no chat template: a judge must be a chat "
                            "(instruct) model")
        self.model, self.tokenizer, self.device = model.eval(), tokenizer, device
        # The cache key holds the judge name, so a local folder is named by its resolved path.
        self.name = name or (f"local:{Path(model_path).resolve()}" if model_path else "local:in-memory")
        self.max_parse_retries = max_parse_retries
        self.concurrency = 1  # one model, one forward at a time
        self._lock = threading.Lock()

    def _call(self, req: JudgeRequest, repeat: int):
        import torch  # heavy (seconds): only a run with a local judge model pays it

        t0 = time.perf_counter()
        with self._lock, torch.no_grad():
            ids = self.tokenizer.apply_chat_template(req.messages, add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
            ids = {k: v.to(self.device) for k, v in ids.items()}
            pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
                else self.tokenizer.eos_token_id
            out = self.model.generate(**ids, max_new_tokens=req.max_tokens, do_sample=False, pad_token_id=pad,
                                      output_scores=bool(req.logprobs), return_dict_in_generate=True)
        new = out.sequences[0, ids["input_ids"].shape[1]:]
        raw = self.tokenizer.decode(new, skip_special_tokens=True)
        if req.logprobs:  # as an API's top_logprobs of the first generated token
            logp = torch.log_softmax(out.scores[0][0].float(), dim=-1)
            top = torch.topk(logp, k=min(int(req.logprobs), logp.shape[-1]))
            raw = {"text": raw, "top_logprobs": [{"token": self.tokenizer.decode([int(i)]), "logprob": float(v)}
                                                 for v, i in zip(top.values, top.indices)]}
        usage = {"prompt_tokens": int(ids["input_ids"].shape[1]), "completion_tokens": int(new.shape[0])}
        self._log(JudgeLogEntry(time=time.time(), judge=self.name, task=req.task, example_id=req.example_id,
                                turn=req.turn, repeat=repeat, form=req.form, attempt=1, messages=req.messages,
                                raw=raw, usage=usage, latency_s=time.perf_counter() - t0))
        if self.ledger is not None:
            self.ledger.add(self.name, usage)
        return raw, usage, None, 1
