"""`bench` command line. Each subcommand lives in its own ``bench/commands/<name>.py`` module exposing
``add_arguments(parser)`` and ``run(args) -> int``; expected errors become one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import importlib
import sys

from sftmix.errors import UserError

# name -> one-line help; module bench.commands.<name>
COMMANDS = {
    "run": "train every variant, generate, judge, score and print the comparison table",
    "train": "fine-tune a model with one variant (ntp, sftmix, ...)",
    "dynamics": "reference NTP run + per-example confidence table + median split",
    "generate": "generate answers for tasks with a model (hf or vllm backend)",
    "judge": "judge/score generations (LLM judge, reference judge, mcq, exact)",
    "table": "tables in the paper's layouts from run directories",
    "view": "a self-contained HTML report of runs: tables, plots, every answer and verdict side by side",
    "variants": "list the training variants",
    "tasks": "list the evaluation tasks",
    "perf": "benchmarks: step time, memory, throughput ratios",
    "conformance": "reproduce FastChat's MT-Bench and AlpacaEval 2.0's figures from their own data",
    "status": "each stage of a run: done, queued, running where, failed why (also while it runs)",
    "stage": "run one stage of a run in this process (what an executor's worker runs)",
}


def _load(name: str):
    return importlib.import_module(f"bench.commands.{name.replace('-', '_')}")


class _Parser(argparse.ArgumentParser):
    """argparse with errors in the CLI's one-line format (``bench train: error: ...``), exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="SFTMix Bench: train, generate, judge, tabulate.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # Import only the chosen subcommand: `bench variants` should not pay for torch's import.
        if name == wanted:
            _load(name).add_arguments(p)
    return parser


# Commands whose work runs torch on the CPU: their intra-op threads are chosen for this machine (bench.threads).
_TORCH_COMMANDS = {"run", "stage", "train", "dynamics", "generate", "judge"}


def main(argv: list[str] | None = None) -> int:
    from bench import threads

    threads.quiet_openmp()  # before anything imports torch: OpenMP reads its wait policy once, when it loads
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    if not argv:  # a bare `bench` explains itself rather than starting a run in the current directory
        parser.print_help()
        return 0
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    mod = _load(args.command)
    if extra and not getattr(mod, "ACCEPTS_OVERRIDES", False):
        print(f"bench {args.command}: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
        return 2
    args.extra = extra
    try:
        if args.command in _TORCH_COMMANDS:
            threads.apply(getattr(args, "threads", None), "--threads")
        return int(mod.run(args) or 0)
    except UserError as e:
        print(f"bench {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bench {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
