"""What many test modules share: the repository root, running ``bench`` (in this process or a fresh one) and
checking that a mistake ends in exactly one error line."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.judge.config import load_judge_config
from core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def bench(*argv) -> tuple[int, str, str]:
    """``bench ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own exits (errors, --help, --version)
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def cli_env(env: dict | None = None) -> dict:
    """The environment of a ``bench`` subprocess: this checkout first on the path, a dummy judge key."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OPENAI_API_KEY": "sk-dummy-test", **(env or {})}


def bench_process(*argv, timeout: int = 300, env: dict | None = None) -> tuple[int, str, str]:
    """``bench ARGV`` in a fresh process, as a user runs it: (exit code, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "bench.cli", *map(str, argv)], cwd=ROOT, env=cli_env(env), text=True,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def bench_subprocess(*argv, env: dict | None = None, **kw) -> subprocess.Popen:
    """``bench ARGV`` started in a fresh process with pipes, for tests that signal or watch it."""
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *map(str, argv)], cwd=ROOT, env=cli_env(env),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def error_lines(stderr: str, cmd: str = "run") -> list[str]:
    """The CLI's error lines; progress bars and logging may share stderr, a traceback may not."""
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith(f"bench {cmd}: error:")]


def the_error(cmd: str, result: tuple[int, str, str], *needles: str) -> str:
    """Exit 2, no traceback, and the last stderr line is the one ``bench CMD: error: ...`` line (log lines and
    progress bars may precede it), containing every needle."""
    rc, _, stderr = result
    errors = error_lines(stderr, cmd)
    assert rc == 2, stderr[-3000:]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def alpaca_eval_template_missing() -> str | None:
    """Why AlpacaEval's annotator template cannot be loaded here (no alpaca-eval package, no
    ``$ALPACA_EVAL_PROMPT``, no peer copy, offline), or None when it can."""
    try:
        load_judge_config("alpaca_eval_weighted")
    except UserError:
        return ("AlpacaEval's annotator template is not available here (pip install alpaca-eval, set "
                "$ALPACA_EVAL_PROMPT, or put the peer data at ../shared/peer)")
    return None


needs_alpaca_eval_template = pytest.mark.skipif(alpaca_eval_template_missing() is not None,
                                                reason=str(alpaca_eval_template_missing()))
