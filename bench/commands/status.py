"""`bench status RUN`: what each stage of a run is doing — done (in how long, where), queued or running (where, as
which job, which attempt), failed (why, and the log), stale or still to do — from the run directory alone, so it
works from another shell while the run goes on."""
from __future__ import annotations

import argparse

from bench.pipeline.status import render_status, stage_rows
from core.io import write_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN", help="a bench run directory")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the stages' states as JSON")


def run(args) -> int:
    rows, header = stage_rows(args.run_dir)
    print(render_status(rows, header))
    if args.json_out:
        write_json(args.json_out, {"run": header, "stages": rows})
    return 0
