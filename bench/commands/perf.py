"""`bench perf [--quick] [--only step,trl,scaling,dynamics,scoring,generation,rerun,contamination,contention]
[--device cpu|cuda] [--configs C,...] [--out DIR]`."""
from __future__ import annotations

import argparse

from bench.perf import DEFAULT_VLLM_PYTHON, SECTIONS, render_markdown, run_perf
from core.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run in seconds")
    parser.add_argument("--only", default="", help=f"comma-separated sections (default all): {','.join(SECTIONS)}")
    parser.add_argument("--device", default=None, choices=["cpu", "cuda"], help="default: cuda if visible, else cpu")
    parser.add_argument("--out", default="results/perf", help="folder for perf-<device>.md/.json")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per worker (default: 1 on CPU, with OMP_WAIT_POLICY=PASSIVE; "
                             "torch's on GPU)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved repeats of every configuration")
    parser.add_argument("--vllm-python", default=None, help="python of the vllm venv (default .venv-vllm/bin/python)")
    parser.add_argument("--configs", default="", help="comma-separated step configurations instead of the device's "
                        "own (e.g. the GPU's ntp-compile,sftmix-fast on CPU, to rehearse them)")


def run(args) -> int:
    device = args.device
    if device is None:
        import torch  # heavy optional dependency

        device = "cuda" if torch.cuda.is_available() else "cpu"
    for flag, value in (("--rounds", args.rounds), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()] or None
    rep = run_perf(device=device, quick=args.quick, only=only, out=args.out, threads=args.threads, rounds=args.rounds,
                   vllm_python=args.vllm_python or DEFAULT_VLLM_PYTHON, configs=configs)
    print(render_markdown(rep))
    print(f"saved {args.out}/perf-{device}.md and .json")
    return 0
