"""The hf backend on the tiny preset: deterministic greedy, left padding = batch 1, stop strings, and option
log-likelihoods / MCQ accuracy against a hand computation with the model's forward pass."""
import json

import pytest
import torch

from bench.backends import backend_factory
from bench.backends.base import GenRequest, GenSettings, LoglikRequest
from bench.backends.hf import HFBackend
from bench.generate import generate_task
from bench.tasks import Task

MESSAGES = [
    [{"role": "user", "content": "Describe an apple."}],
    [{"role": "user", "content": "What is 6 + 7? Answer with just the answer, please, as briefly as you can."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Tell me about the apple and the tree it grows on, in two sentences."}],
]


def _requests(settings=GenSettings(max_new_tokens=12)):
    return [GenRequest("t", str(i), 0, m, settings) for i, m in enumerate(MESSAGES)]


def test_registry_resolves_hf_lazily():
    assert backend_factory("hf") is HFBackend


def test_greedy_is_deterministic_and_left_padding_matches_batch_size_one(hf_backend):
    first = hf_backend.generate(_requests())
    assert [g.text for g in hf_backend.generate(_requests())] == [g.text for g in first]
    hf_backend.batch_size = 1
    try:
        single = hf_backend.generate(_requests())
    finally:
        hf_backend.batch_size = 4
    assert [(g.text, g.prompt_tokens, g.completion_tokens) for g in single] == \
           [(g.text, g.prompt_tokens, g.completion_tokens) for g in first]
    tok = hf_backend.tokenizer
    for g, m in zip(first, MESSAGES):
        assert g.prompt_tokens == len(tok(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True),
                                          add_special_tokens=False).input_ids)
        assert 0 <= g.completion_tokens <= 12


def test_sampling_repeats_with_the_same_seed(hf_backend):
    s = GenSettings(max_new_tokens=10, temperature=1.0, seed=3)
    a, b = hf_backend.generate(_requests(s)), hf_backend.generate(_requests(s))
    assert [g.text for g in a] == [g.text for g in b]


def test_stop_strings_truncate(hf_backend):
    free = hf_backend.generate(_requests(GenSettings(max_new_tokens=16)))[0].text
    assert len(free) >= 4, "the tiny model should say something"
    stop = free[2:4]
    cut = free[:free.find(stop)]
    stopped = hf_backend.generate(_requests(GenSettings(max_new_tokens=16, stop=(stop,))))[0]
    assert stopped.text == cut
    assert stopped.completion_tokens == len(hf_backend.tokenizer(cut, add_special_tokens=False).input_ids)


def _hand_loglik(model, tok, context: str, continuation: str) -> float:
    """One unpadded forward of context+continuation; continuation tokens = whole minus the context's tokens."""
    whole = tok(context + continuation).input_ids
    n_ctx = len(tok(context).input_ids)
    with torch.no_grad():
        logits = model(torch.tensor([whole])).logits[0]
    logprobs = torch.log_softmax(logits.float(), -1)
    return sum(float(logprobs[i - 1, whole[i]]) for i in range(n_ctx, len(whole)))


def test_loglikelihood_matches_hand_computation_in_any_batching(hf_backend):
    reqs = [LoglikRequest("a", "Question: What is 18 + 11?\nAnswer:", [" A", " B", " 29", " twenty nine"]),
            LoglikRequest("b", "An apple is a round", [" fruit", " stone that rolls away"])]
    got = hf_backend.loglikelihood(reqs)
    for r, lls in zip(reqs, got):
        for cont, ll in zip(r.continuations, lls):
            assert ll == pytest.approx(_hand_loglik(hf_backend.model, hf_backend.tokenizer, r.context, cont), abs=1e-4)
            assert ll < 0
    hf_backend.batch_size = 1
    try:
        flat = [x for lls in hf_backend.loglikelihood(reqs) for x in lls]
        assert flat == pytest.approx([x for lls in got for x in lls], abs=1e-4)
    finally:
        hf_backend.batch_size = 4


def test_mcq_accuracy_matches_hand_computation(hf_backend, tmp_path):
    rows = [{"id": "q1", "question": "What is 18 + 11?", "choices": ["26", "30", "29", "31"], "answer": 2},
            {"id": "q2", "question": "Which one is a fruit?", "choices": ["apple", "stone", "car", "tree"], "answer": 0}]
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = Task(name="two", kind="mcq", scorer="mcq", data={"local": str(data)},
                fields={"id": "id", "question": "question", "choices": "choices", "answer": "answer"},
                prompt="Question: {{ question }}\n{% for l, c in options %}{{ l }}. {{ c }}\n{% endfor %}Answer:",
                continuation=" {{ choice }}")  # option texts: different lengths, so acc_norm can differ from acc
    records = generate_task(task, task.load_records(), hf_backend, model_id="tiny", out=tmp_path / "two.jsonl.out")
    for row, rec in zip(rows, records):
        prompt = "Question: {q}\n{opts}Answer:".format(
            q=row["question"], opts="".join(f"{l}. {c}\n" for l, c in zip("ABCD", row["choices"])))
        conts = [" " + c for c in row["choices"]]
        hand = [_hand_loglik(hf_backend.model, hf_backend.tokenizer, prompt, c) for c in conts]
        assert rec.logliks == pytest.approx(hand, abs=1e-4)
        pred = max(range(4), key=lambda i: hand[i])
        pred_norm = max(range(4), key=lambda i: hand[i] / len(row["choices"][i]))  # lm-eval: characters, no space
        assert (rec.values["pred"], rec.values["pred_norm"]) == (pred, pred_norm)
        assert rec.values["acc"] == float(pred == row["answer"])
        assert rec.values["acc_norm"] == float(pred_norm == row["answer"])


def test_shared_prefix_scores_equal_the_per_pair_path(tiny_model_dir):
    plain = HFBackend(tiny_model_dir, batch_size=3, progress=False)
    shared = HFBackend(tiny_model_dir, batch_size=3, progress=False, share_prefix=True)
    reqs = [LoglikRequest("a", "Question: which colour is the sky?\nAnswer:", [" blue", " a pale grey", " (C)"]),
            LoglikRequest("b", "x" * 3, [" yes", " no"]),
            LoglikRequest("c", "Pick one of fourteen:", [f" ({chr(65 + k)}) option {k}" for k in range(14)])]
    a, b = plain.loglikelihood(reqs), shared.loglikelihood(reqs)
    assert [len(x) for x in b] == [3, 2, 14]
    for ra, rb in zip(a, b):
        assert rb == pytest.approx(ra, rel=1e-4, abs=1e-4)
