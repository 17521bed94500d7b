"""``python -m bench.perf --worker SPEC``: one measurement in this process (internal; see :mod:`.protocol`)."""
import argparse
import sys

from .protocol import worker_main

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="bench perf worker (internal)")
    ap.add_argument("--worker", required=True, help="JSON measurement spec")
    sys.exit(worker_main(ap.parse_args().worker))
