"""`bench judge-agreement`: the stored judges' agreement with MT-Bench's experts, from the votes alone - GPT-4's
pairwise verdicts vs the experts, and expert vs expert - per turn, with and without ties, exactly as FastChat's
``compute_agreement.py`` computes it (:mod:`bench.agreement`)."""
from __future__ import annotations

import argparse

from bench import agreement as ag
from core.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peer-dir", help="folder in ../shared/peer's layout (default: ../shared/peer beside the "
                                      "repository if present, else the pinned, sha256-checked downloads)")
    p.add_argument("--json", metavar="FILE",
                   help='write {"<judge>": {"turn1": {"with_ties": {"agree", "total"}, "without_ties": ...}, '
                        '"turn2": ...}} for gpt-4 and human')


def run(args) -> int:
    peer = args.peer_dir or ag.default_peer_dir()
    human = ag.read_votes(ag.peer_file("fastchat/human/mt_bench_human.csv", peer))
    gpt4 = ag.read_votes(ag.peer_file("fastchat/human/mt_bench_gpt4_pair.csv", peer))
    table = {"gpt-4": ag.agreement_table(human + gpt4, ag.GPT4), "human": ag.agreement_table(human, ag.HUMAN)}
    print("agreement with MT-Bench's experts (FastChat compute_agreement.py; human = expert vs expert)")
    print(ag.render(table))
    if args.json:
        write_json(args.json, table)
    return 0
