"""Scorers turn judge verdicts (or multiple-choice log-likelihoods) into benchmark numbers.

Judgment record (one dict per judgment, ``bench.judge.Verdict.to_record()``; every judged scorer reads these):
``{task, example_id, turn, variant (filled by the caller), judge (model name or 'reference-rubric-v1'),
judge_kind ('llm' | 'local' | 'reference'), repeat, score (float or None), failed (bool), raw (judge text),
error (str or None), usage {prompt_tokens, completion_tokens}}``, plus ``form`` (prompt form), ``config`` (judge
config name), ``attempts``, ``latency_s``, ``cached`` and ``meta`` (e.g. MT-Bench ``category``, AlpacaEval
``swapped``).
"""
