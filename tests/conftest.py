"""Shared fixtures: everything offline, presets built once per session into a temporary SFTMIX_HOME."""
import os
import signal
import sys
from pathlib import Path

import pytest

# Before anything imports transformers/datasets: the suite never touches the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

# A suite started in the background (`cmd &`, nohup) inherits SIGINT ignored, and so would every `bench` it starts:
# the Ctrl-C tests need the child's own handling, whatever started the suite.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ASSETS = Path(__file__).resolve().parents[1] / "sftmix" / "assets"
# BIG-Bench Hard's task files for the tests and CI: ../shared/data/bbh beside the repository (see its README); tests
# that need them skip without, the rest write their own BBH-shaped files.
SHARED_BBH = Path(__file__).resolve().parents[2] / "shared" / "data" / "bbh"
if SHARED_BBH.is_dir():
    os.environ.setdefault("BBH_DIR", str(SHARED_BBH))

# Without the optional alpaca-eval package, AlpacaEval's annotator prompt comes from the peer folder's copy (as a user
# would pass it with judge.alpaca_eval_prompt); tests that hide the package on purpose unset this.
_PEER_CLF = Path(__file__).resolve().parents[2] / "shared" / "peer" / "alpaca_eval" / "alpaca_eval_clf.txt"
if _PEER_CLF.is_file() and "ALPACA_EVAL_PROMPT" not in os.environ:
    import importlib.util

    if importlib.util.find_spec("alpaca_eval") is None:
        os.environ["ALPACA_EVAL_PROMPT"] = str(_PEER_CLF)


@pytest.fixture(scope="session", autouse=True)
def sftmix_home(tmp_path_factory):
    """A per-session SFTMIX_HOME so preset builds never land in ~/.cache (subprocesses inherit it)."""
    old = os.environ.get("SFTMIX_HOME")
    home = tmp_path_factory.mktemp("sftmix_home")
    os.environ["SFTMIX_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("SFTMIX_HOME", None)
    else:
        os.environ["SFTMIX_HOME"] = old


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """`bench.cli.main` sets torch's thread count for the machine (bench.threads); a test that calls it in process
    must not change it for the tests after it."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch else None
    yield
    if before is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(sftmix_home) -> str:
    """Folder of the tiny-llama preset (built once per session)."""
    # here, not at the top: the offline environment above must be set before transformers is first imported
    from sftmix.presets import resolve_model

    return resolve_model("tiny-llama")


@pytest.fixture
def tiny_tokenizer(tiny_model_dir):
    """A fresh tiny-llama tokenizer per test (tests may change its chat template)."""
    from transformers import AutoTokenizer  # after the offline environment above (see tiny_model_dir)

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def toy_train_path() -> Path:
    return ASSETS / "toy_train.jsonl"


@pytest.fixture(scope="module")
def hf_backend(tiny_model_dir):
    """The hf backend on the tiny preset, one per test module."""
    # after the offline environment above (see tiny_model_dir)
    import torch
    from bench.backends import get_backend

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core box: extra threads only add contention
    yield get_backend("hf", tiny_model_dir, batch_size=4, progress=False)
    torch.set_num_threads(threads)


# `SFTMIX_TEST_CPU=FILE pytest ...` appends each test's CPU seconds (this process and its finished children: a
# measure of its cost that the machine's load does not inflate, unlike --durations) to FILE, to find the tests that
# need the slow mark (>= 10 s on 2 cores).
if os.environ.get("SFTMIX_TEST_CPU"):
    import resource

    def _cpu_s() -> float:
        own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        t0 = _cpu_s()
        yield
        with open(os.environ["SFTMIX_TEST_CPU"], "a") as f:
            f.write(f"{_cpu_s() - t0:.2f}\t{item.nodeid}\t{'slow' if item.get_closest_marker('slow') else ''}\n")
