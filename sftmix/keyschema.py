"""What enters a config hash or a stage key: every compatibility rule, in one versioned place.

A config hash names a run's results; a stage key decides whether a finished stage is redone. Both must stay the
same when the schema grows, or every finished run would be redone. Three kinds of rule keep them:

* never hashed - a field that changes where or how a run happens, not what it makes (``run.out``, the executor);
* added - a field added after runs existed is left out while it has its default, so older keys stay;
* removed - a field taken out of the schema is hashed at the value every run had, so older keys stay.

Every hashing site (:meth:`bench.config.RunConfig.config_hash`, :mod:`bench.pipeline.keys`, the finished-training
check of :mod:`sftmix.recipe`, :meth:`sftmix.variants.Variant.to_dict`, the judge fingerprint) reads these tables,
and ``tests/test_key_schema.py`` pins the hash of every bundled experiment. Adding a field: put it in ``ADDED`` with
its default. Removing one: move it to ``REMOVED`` with the value runs had. Changing what a key means on purpose:
bump :data:`VERSION` and re-pin the tests (every finished stage is then redone).
"""
from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any, Mapping

# The schema's version. Version 1 is every key written so far; it is not itself hashed (so that it is 1 keeps them).
VERSION = 1

# Whole config sections that never enter the config hash: where stages run (switching executor resumes the same
# run), and the contamination check (an analysis of the data, not of the results: its stage has its own key).
UNHASHED_SECTIONS: frozenset[str] = frozenset({"executor", "contamination"})

# section -> fields never hashed: where results go and what is printed (run), how the judge is called (judge),
# torch's thread count (run.threads).
NEVER: dict[str, frozenset[str]] = {
    "run": frozenset({"out", "layout", "threads"}),
    "judge": frozenset({"concurrency", "timeout", "max_retries"}),
}

# section -> {field: default}: fields added after runs existed; left out of a hash while at their default.
ADDED: dict[str, dict[str, Any]] = {
    "run": {"seeds": None, "num_nodes": 1},
    "model": {"trainable_layers": None},
    "dynamics": {"split": "global"},
    "generation": {"share_prefix": False},
    "judge": {"mode": "single", "swap": False, "alpaca_eval_prompt": None},
}

# section -> {field: (the value every run had, why it went)}: fields removed from the schema. A config that still sets
# one is accepted with a deprecation warning; hashes see it at that value.
REMOVED: dict[str, dict[str, tuple[Any, str]]] = {
    "train": {"mixup_reduction": ("pair", "it was never read: the Mixup loss is always a token mean per pair, "
                                          "then a mean over pairs")},
}

# Stage keys beyond the config sections:
# the generate key's run options added later, left out at their default
GENERATE_ADDED: dict[str, Any] = {"limit_mode": "first"}
# task definition fields no generation key has: the data's hash and whereabouts (data_hash, source, path, layout);
# parametric/param, since the name says it all (bigbench:navigate); contamination, which no generation reads
TASK_NOT_KEYED: frozenset[str] = frozenset({"data_hash", "source", "path", "layout", "parametric", "param",
                                            "contamination"})
# package data files that moved with the same bytes (issue 24: the toy tasks' data, sftmix -> bench): a task's key
# names the old place, so generations and scores made before the move keep their keys
TASK_DATA_MOVED: dict[tuple[str, str], str] = {("bench", f"assets/{n}"): "sftmix"
                                               for n in ("toy_mcq.jsonl", "toy_open.jsonl", "toy_exact.jsonl")}
# variant options added later: left out while unset (falsy irdro_tau, no confidence_split)
VARIANT_ADDED: dict[str, Any] = {"irdro_tau": 0.0, "confidence_split": None}
# variant fields the train key holds at a fixed value: the description is prose, never what is trained
VARIANT_NOT_KEYED: dict[str, Any] = {"description": None}
# score keys of pairwise scorers only: the generations compared with (``versus``), absent from every other score key
SCORE_PAIRWISE_ONLY: tuple[str, ...] = ("versus",)
# judge config settings added later (the judge fingerprint): left out at their default
JUDGE_FINGERPRINT_ADDED: dict[str, Any] = {"both_orders": False}


def _as_dict(section: Any) -> dict[str, Any]:
    return asdict(section) if is_dataclass(section) else dict(section)


def without_added(values: Mapping[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` less the ``added`` fields that have their default (compared with ==, so 0 == 0.0 == False)."""
    return {k: v for k, v in values.items() if not (k in added and v == added[k])}


def hashed_section(name: str, section: Any) -> dict[str, Any]:
    """Config section ``name`` (a dataclass or a dict) as hashes see it: never-hashed fields out, removed ones at
    their old value, added ones out while at their default."""
    d = {k: v for k, v in _as_dict(section).items() if k not in NEVER.get(name, ())}
    d.update({k: value for k, (value, _) in REMOVED.get(name, {}).items()})
    return without_added(d, ADDED.get(name, {}))


def config_key(sections: Mapping[str, Any]) -> dict[str, Any]:
    """A whole config (section name -> section) as its config hash sees it."""
    return {name: hashed_section(name, sec) for name, sec in sections.items() if name not in UNHASHED_SECTIONS}


def without_removed(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config dict (``TrainConfig.to_dict()`` of an earlier run) without the removed options."""
    return {s: ({k: v for k, v in sec.items() if k not in REMOVED.get(s, {})} if isinstance(sec, dict) else sec)
            for s, sec in config.items()}


def comparable(config: Mapping[str, Any]) -> dict[str, Any]:
    """A stored config dict as records compare it: without removed options, and without added ones at their
    default (a record from before an option was added equals one from after it, at its default)."""
    return {s: (without_added(sec, ADDED.get(s, {})) if isinstance(sec, dict) else sec)
            for s, sec in without_removed(config).items()}


def removed_option(sections: Mapping[str, Any] | Any, section: str, name: str) -> str | None:
    """Why option ``section.name`` (``section`` may be "") was removed, if it was one of ``sections``'."""
    return next((why for s, opts in REMOVED.items() for n, (_, why) in opts.items()
                 if n == name and section in ("", s) and s in sections), None)


def task_key(task_fields: Mapping[str, Any]) -> dict[str, Any]:
    """A task definition (``dataclasses.asdict(task)``) as the generate and contamination keys see it."""
    def old_place(fb: Any) -> Any:
        moved = isinstance(fb, dict) and TASK_DATA_MOVED.get((fb.get("package"), fb.get("file")))
        return {**fb, "package": moved} if moved else fb

    d = {k: v for k, v in task_fields.items() if k not in TASK_NOT_KEYED}
    fb = (d.get("data") or {}).get("fallback")
    if fb is not None:
        d["data"] = {**d["data"], "fallback": [old_place(f) for f in fb] if isinstance(fb, list) else old_place(fb)}
    return d


def variant_key(variant_fields: Mapping[str, Any]) -> dict[str, Any]:
    """A variant's fields as its record holds them (options added later left out while unset)."""
    return without_added(variant_fields, VARIANT_ADDED)


def variant_stage_key(variant_record: Mapping[str, Any]) -> dict[str, Any]:
    """A variant (its :func:`variant_key` record) as the train stage key sees it."""
    return {**variant_record, **VARIANT_NOT_KEYED}


def score_extras(pairwise: bool, **values: Any) -> dict[str, Any]:
    """What a score key holds beyond the common fields: :data:`SCORE_PAIRWISE_ONLY` for pairwise scorers, else
    nothing (so the score keys from before pairwise scoring stay)."""
    return {k: values.get(k) for k in SCORE_PAIRWISE_ONLY} if pairwise else {}
