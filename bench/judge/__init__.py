"""Judges: prompt forms and parsers as data (``configs/*.yaml``), and three judges with one output format.

- :class:`~bench.judge.client.OpenAIJudge` — any OpenAI-compatible chat endpoint (OpenAI, a local vLLM server);
- :class:`~bench.judge.local.LocalJudge` — an in-process ``transformers`` model, same prompts and parsers;
- :class:`~bench.judge.reference.ReferenceJudge` — a deterministic rubric against the reference answer, for offline
  smoke runs. It is not an LLM and names itself ``reference-rubric-v1`` in every verdict.

A judge config (one YAML file; adding a judge = adding a file) names its mode (``single``: a 1-10 rating;
``pairwise``: which of two outputs is better), default model, temperature, max_tokens, the parser, and one or more
prompt *forms* (e.g. ``single``, ``single_ref``, ``multi``, ``multi_ref``, ``pairwise``).

The modules: :mod:`.config` (a config file -> :class:`JudgeConfig`), :mod:`.prompts` (prompt forms and the
sources their text comes from: inline, an installed package's file, a local file, a pinned URL), :mod:`.parser`
(a reply -> a number), :mod:`.client` (requests, verdicts, the OpenAI-compatible judge, its cache),
:mod:`.local`, :mod:`.reference`, :mod:`.ledger` (token and cost estimates). The names below are re-exported here.
"""
from __future__ import annotations

from .client import BaseJudge, JudgeRequest, OpenAIJudge, Verdict
from .config import CONFIG_DIR, MODES, JudgeConfig, judge_config_names, load_judge_config
from .parser import Parser
from .prompts import ENGINES, PromptForm, download_cached

__all__ = [
    "BaseJudge", "CONFIG_DIR", "ENGINES", "JudgeConfig", "JudgeRequest", "MODES", "OpenAIJudge", "Parser",
    "PromptForm", "Verdict", "download_cached", "judge_config_names", "load_judge_config",
]
