"""`bench conformance`: reproduce the peer tools' figures (FastChat MT-Bench, AlpacaEval 2.0) from their own data.

Prints one row per check (expected, ours, PASS/FAIL) and exits 1 on any FAIL. The peer folder's layout is described
in :mod:`bench.conformance` (``../shared/peer`` has it; any folder of the same layout works).
"""
from __future__ import annotations

import argparse

from bench import conformance
from core.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peer-dir", required=True, help="folder with fastchat/ and/or alpaca_eval/ peer data")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")


def run(args) -> int:
    figures, checks = conformance.run(args.peer_dir)
    print(conformance.render(checks))
    if args.json:
        write_json(args.json, figures)
    return 0 if all(c.ok for c in checks) else 1
