"""`bench` command line. Each subcommand lives in its own ``bench/commands/<name>.py`` module exposing
``add_arguments(parser)`` and ``run(args) -> int``; expected errors become one line on stderr and exit 2."""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from importlib.metadata import PackageNotFoundError, version

from bench import __version__, threads
from bench.provenance import git_commit
from core.errors import Interrupted, UserError, os_error

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
    "judge-report": "the judge's reliability on every judged task of a run (repeats, position and length bias)",
    "judge-calibrate": "a judge's agreement with MT-Bench's experts (FastChat's matches), next to GPT-4's",
    "judge-agreement": "GPT-4's and the experts' agreement with MT-Bench's experts, from the stored votes",
    "contamination": "which evaluation items the training data already holds (lm-eval's 13-gram overlap)",
}


def _load(name: str):
    return importlib.import_module(f"bench.commands.{name.replace('-', '_')}")


class _Parser(argparse.ArgumentParser):
    """argparse with errors in the CLI's one-line format (``bench train: error: ...``), exit code 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def version_line() -> str:
    """``bench 0.1.0 (sftmix-bench, git <sha>[, modified])``: the installed version and the checkout it runs."""
    try:
        v = version("sftmix-bench")
    except PackageNotFoundError:
        v = __version__
    git = git_commit()
    where = f", git {git['commit'][:12]}{', modified' if git['dirty'] else ''}" if git["commit"] != "unknown" else ""
    return f"bench {v} (sftmix-bench{where}; Python {sys.version.split()[0]})"


class _Version(argparse.Action):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="bench", description="SFTMix Bench: train, generate, judge, tabulate.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        # Import only the chosen subcommand: `bench variants` should not pay for torch's import.
        if name == wanted:
            _load(name).add_arguments(p)
    return parser


def _tolerant_output() -> None:
    """A terminal or pipe that cannot show a character (LANG=C, PYTHONIOENCODING=ascii) gets an escape for it,
    not a UnicodeEncodeError after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError):
            pass


_SIGNALLED: list[int] = []


def _on_sigterm(signum, frame):
    """SIGTERM (``kill``, a scheduler's time limit) stops like Ctrl-C: cleanly, saying what was kept."""
    _SIGNALLED.append(signum)
    raise Interrupted("terminated (SIGTERM); re-run the same command to resume")


# Commands whose work runs torch on the CPU: their intra-op threads are chosen for this machine (bench.threads).
_TORCH_COMMANDS = {"run", "stage", "train", "dynamics", "generate", "judge"}


def main(argv: list[str] | None = None) -> int:
    threads.quiet_openmp()  # before anything imports torch: OpenMP reads its wait policy once, when it loads
    _tolerant_output()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (an embedding program): leave its signals alone
        previous = None
    try:
        rc = _main(argv)
        return 128 + _SIGNALLED[-1] if rc == 130 and _SIGNALLED else rc
    except BrokenPipeError:  # `bench table RUN | head`: the reader left; not an error of ours
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError:
            pass
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _SIGNALLED.clear()


def _main(argv: list[str]) -> int:
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
    except KeyboardInterrupt as e:
        print(f"bench {args.command}: {str(e) or 'interrupted; re-run the same command to resume'}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise
    except OSError as e:
        # A full disk, a read-only or forbidden folder wherever a library wrote (a checkpoint, a dataset cache):
        # what the machine said, in one line; the work finished before it is kept (every record is atomic).
        if e.errno is None:
            raise
        print(f"bench {args.command}: error: {os_error(e, 'use', e.filename)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
