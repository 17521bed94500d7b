"""The fused chunk bodies (sftmix.loss.fused: the C++ kernel, torch.compile) against the eager body (the kernel as it
was before fusion) and the naive full-logits references; the backend choice and its fallbacks."""
import logging
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sftmix.loss.warn
import test_loss_kernel
from core.errors import UserError
from sftmix.loss import (
    LogitTransform, LossOptions, fused, linear_cross_entropy, mixup_loss, ntp_loss, ntp_mixup_loss,
    response_token_nll,
)
from sftmix.loss.kernel import chunk_rows, kernel_chunk

ENV = fused.ENV


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(sftmix.loss.warn, "_WARNED", set())


@pytest.fixture(scope="module")
def cpp():
    """The built C++ body (the first build on a machine takes about a minute; later ones load the cached module)."""
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler on this machine: the fused CPU body cannot be built (eager is used)")
    ext = fused.cpu_extension()
    assert ext is not None, fused.status()["cpp_error"]
    return ext


def _chunk_inputs(c, v, p, soft, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(c, v, generator=gen, dtype=torch.float64)).to(dtype)
    y = torch.randint(0, v, (c,), generator=gen)
    yb = torch.randint(0, v, (c,), generator=gen) if soft else None
    coef = torch.rand(c, generator=gen, dtype=torch.float64).to(dtype) if soft else None
    lam = torch.rand(p, generator=gen, dtype=torch.float64).to(dtype)
    w = torch.rand(p, generator=gen, dtype=torch.float64).to(dtype)  # each slot's weight
    return x, y, yb, coef, lam, w


def _reference(x, y, yb, coef, lam, w, rows, scale):
    """tok, nll_m and d/dx of sum(tok) + sum(w * nll_m) by autograd over full log-softmaxes."""
    x = x.detach().double().requires_grad_()
    t = x * scale
    logp = F.log_softmax(t, -1)
    tok = -logp.gather(1, y[:, None]).squeeze(1)
    if yb is not None:
        c = coef.double()
        tok = c * tok - (1 - c) * logp.gather(1, yb[:, None]).squeeze(1)
    p = lam.shape[0]
    lam_ = lam.double()[:, None]
    logq = F.log_softmax(lam_ * t[0:2 * p:2] + (1 - lam_) * t[1:2 * p:2], -1)
    nll_m = -(lam_ * logq.gather(1, y[0:2 * p:2, None]) + (1 - lam_) * logq.gather(1, y[1:2 * p:2, None])).squeeze(1)
    total = (tok.sum() if rows else 0.0) + (w.double() * nll_m).sum()
    (g,) = torch.autograd.grad(total, [x])
    return tok.detach(), nll_m.detach(), g


CHUNK_CASES = [  # (rows, pairs, soft targets, rows term, scale)
    (7, 3, False, True, 1.0), (6, 3, False, False, 1.0), (5, 0, False, True, 0.7), (6, 2, True, True, 1.0),
    (4, 2, False, True, 2.5),
]


@pytest.mark.parametrize("c, p, soft, rows, scale", CHUNK_CASES)
def test_chunk_body_is_the_loss_and_its_gradient(c, p, soft, rows, scale):
    """The torch form of the fused body (what the compile backend compiles) against autograd."""
    x, y, yb, coef, lam, w = _chunk_inputs(c, 37, p, soft, torch.float64)
    ka, kb = w * lam, w * (1 - lam)  # a slot's weight split over its rows by λ, as the kernel passes it
    tok, nll_m, g = fused.chunk_body(x, y, yb, coef, p, lam, ka, kb, rows, True, scale)
    ref_tok, ref_nll_m, ref_g = _reference(x, y, yb, coef, lam, w, rows, scale)
    if rows:
        torch.testing.assert_close(tok, ref_tok, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll_m, ref_nll_m, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, ref_g, rtol=1e-11, atol=1e-12)
    tok2, nll_m2, none = fused.chunk_body(x, y, yb, coef, p, lam, ka, kb, rows, False, scale)
    assert none is None and torch.equal(tok2, tok) and torch.equal(nll_m2, nll_m)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("v", [203, 5])  # a vocabulary with a vector tail, and one below a vector's width
@pytest.mark.parametrize("c, p, soft, rows, scale", CHUNK_CASES)
def test_cpp_body_equals_the_torch_body(cpp, dtype, v, c, p, soft, rows, scale):
    x, y, yb, coef, lam, w = _chunk_inputs(c, v, p, soft, dtype, seed=v)
    ka, kb = w * lam, w * (1 - lam)
    ref = fused.chunk_body(x, y, yb, coef, p, lam, ka, kb, rows, True, scale)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)
    xx = x.clone()
    tok, nll_m, g = fused.cpp_chunk(xx, y, yb, coef, p, lam, ka, kb, rows, True, scale)
    assert g.data_ptr() == xx.data_ptr()  # in place: no second [chunk, V] buffer
    for got, want in zip((tok, nll_m, g), ref):
        torch.testing.assert_close(got, want, **tol)
    xx = x.clone()
    tok, nll_m, _ = fused.cpp_chunk(xx, y, yb, coef, p, lam, ka, kb, rows, False, scale)
    assert torch.equal(xx, x)  # without gradients the logits are only read
    torch.testing.assert_close(tok, ref[0], **tol)
    torch.testing.assert_close(nll_m, ref[1], **tol)


def _joint(seed=0, dtype=torch.float64, bias=True):
    gen = torch.Generator().manual_seed(seed)
    d, v = 12, 301
    hidden = torch.randn(6, 23, d, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (6, 23), generator=gen)
    labels[0, :9] = -100
    labels[1, :3] = -100
    labels[2, 15:] = -100  # padding
    labels[3, 5:8] = -100  # multi-turn gap
    labels[4, :] = -100  # no response: its pair is not mixed
    torch.manual_seed(seed)
    head = nn.Linear(d, v, bias=bias).to(dtype)
    with torch.no_grad():
        head.weight.mul_(3.0)
    return hidden, labels, head


def _run(backend, monkeypatch, fn):
    monkeypatch.setenv(ENV, backend)
    return fn()


def _loss_and_grads(hidden, labels, head, lean=True, chunk_size=None, **kw):
    total, ntp, mix = ntp_mixup_loss(hidden, labels, head, [0, 1, 2], [3, 4, 5], torch.tensor([0.3, 0.9, 0.5]),
                                     mu=0.4, options=LossOptions(lean=lean, chunk_size=chunk_size), **kw)
    params = [hidden, head.weight] + ([head.bias] if head.bias is not None else [])
    return [total.detach(), ntp, mix, *torch.autograd.grad(total, params)]


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tr", [LogitTransform(), LogitTransform(scale=0.6)], ids=["identity", "scale"])
@pytest.mark.parametrize("ntp_weight", [1.0, 0.0])
@pytest.mark.parametrize("chunk_size", [None, 4, 5])
def test_cpp_ntp_mixup_equals_the_eager_kernel_and_the_naive_loss(cpp, monkeypatch, dtype, tr, ntp_weight,
                                                                   chunk_size):
    hidden, labels, head = _joint(dtype=dtype, bias=chunk_size != 5)
    kw = dict(ntp_weight=ntp_weight, transform=tr, chunk_size=chunk_size)
    got = _run("cpp", monkeypatch, lambda: _loss_and_grads(hidden, labels, head, **kw))
    assert fused.status()["last"] == "cpp"
    eager = _run("eager", monkeypatch, lambda: _loss_and_grads(hidden, labels, head, **kw))
    naive = _run("eager", monkeypatch, lambda: _loss_and_grads(hidden, labels, head, lean=False, **kw))
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)
    for g, e, n in zip(got, eager, naive):
        torch.testing.assert_close(g, e, **tol)
        torch.testing.assert_close(g, n, **tol)


@pytest.mark.slow
def test_cpp_ntp_soft_targets_and_scoring_equal_the_eager_kernel(cpp, monkeypatch):
    hidden, labels, head = _joint()
    tr = LogitTransform(scale=1.3)
    lam = torch.tensor([0.2, 0.7, 0.45], dtype=torch.float64)

    def losses():
        tok = torch.zeros(6, 22, dtype=torch.float64)
        ntp = ntp_loss(hidden, labels, head, transform=tr, token_losses=tok)
        mix = mixup_loss(hidden[:3], hidden[3:], labels[:3], labels[3:], head, lam, transform=tr)
        params = [hidden, head.weight, head.bias]
        return [ntp.detach(), mix.detach(), tok, response_token_nll(hidden, labels, head, transform=tr),
                *torch.autograd.grad(ntp + 0.3 * mix, params)]

    got = _run("cpp", monkeypatch, losses)
    want = _run("eager", monkeypatch, losses)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12, equal_nan=True)


@pytest.mark.slow
@pytest.mark.parametrize("tr", list(test_loss_kernel.TRANSFORMS.values()), ids=list(test_loss_kernel.TRANSFORMS))
def test_cpp_kernel_rows_equal_plain_cross_entropy(cpp, monkeypatch, tr):
    """The kernel tests' plain-CE checks, with the C++ body on (a soft-cap still runs eager)."""
    monkeypatch.setenv(ENV, "cpp")
    for chunk_size in (None, 1, 4):
        test_loss_kernel.test_ntp_is_the_zero_pair_case_and_plain_cross_entropy(tr, True, chunk_size)
    test_loss_kernel.test_kernel_row_term_without_slots_is_weighted_cross_entropy(tr)
    assert fused.status()["last"] == ("eager" if tr.softcap else "cpp")


@pytest.mark.slow
def test_compile_backend_on_cpu_equals_the_eager_kernel(monkeypatch):
    """torch.compile of the torch body (Inductor's C++ here; Triton on CUDA) on a small float32 case."""
    hidden, labels, head = _joint(dtype=torch.float32)
    got = _run("compile", monkeypatch, lambda: _loss_and_grads(hidden, labels, head, chunk_size=6))
    assert fused.status()["compile_error"] is None and fused.status()["last"] == "compile"
    want = _run("eager", monkeypatch, lambda: _loss_and_grads(hidden, labels, head, chunk_size=6))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_backend_choice(monkeypatch):
    z = torch.zeros(4, 8)
    ident, cap = LogitTransform(), LogitTransform(softcap=5.0)
    monkeypatch.setitem(fused._state, "ext", object())  # as if built; no call reaches it here
    monkeypatch.setitem(fused._state, "ext_error", None)
    monkeypatch.delenv(ENV, raising=False)
    assert fused.choose(z, 8, 100, ident, torch.float32) == "eager"  # auto: too small to be worth a build
    assert fused.choose(z, 2048, 1024, ident, torch.float32) == "cpp"
    assert fused.choose(z, 2048, 1024, cap, torch.float32) == "eager"  # the fused bodies have no soft-cap
    assert fused.choose(z, 2048, 1024, ident, torch.bfloat16) == "eager"  # bf16 matmuls under autocast
    monkeypatch.setenv(ENV, "cpp")
    assert fused.choose(z, 8, 100, ident, torch.float32) == "cpp"  # asked for: any size
    monkeypatch.setenv(ENV, "eager")
    assert fused.choose(z, 2048, 1024, ident, torch.float32) == "eager"
    monkeypatch.setenv(ENV, "fastest")
    with pytest.raises(UserError, match="SFTMIX_LCE_BACKEND='fastest': choose one of auto, eager, cpp, compile"):
        fused.choose(z, 8, 100, ident, torch.float32)


def test_a_failed_build_falls_back_to_eager_with_one_warning(monkeypatch, caplog):
    from torch.utils import cpp_extension  # imports setuptools, which a bare Python >= 3.12 venv lacks

    def no_compiler(*a, **k):
        raise RuntimeError("Ninja is required to load C++ extensions\n(and a long build log)")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setitem(fused._state, "ext", None)
    monkeypatch.setitem(fused._state, "ext_error", None)
    monkeypatch.setenv(ENV, "cpp")
    hidden, labels, head = _joint()
    with caplog.at_level(logging.WARNING, logger="sftmix"):
        got = _loss_and_grads(hidden, labels, head)
        _loss_and_grads(hidden, labels, head)
    msgs = [r.getMessage() for r in caplog.records if "fused CPU loss kernel is unavailable" in r.getMessage()]
    assert len(msgs) == 1 and "RuntimeError: Ninja is required to load C++ extensions" in msgs[0]
    assert "long build log" not in msgs[0] and fused.status()["last"] == "eager"
    monkeypatch.setenv(ENV, "eager")
    for g, w in zip(got, _loss_and_grads(hidden, labels, head)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_a_failed_compile_falls_back_to_eager_mid_call(monkeypatch, caplog):
    def broken(*args):
        raise RuntimeError("no working C++ compiler found")

    monkeypatch.setitem(fused._state, "compiled", broken)
    monkeypatch.setitem(fused._state, "compile_error", None)
    monkeypatch.setenv(ENV, "compile")
    hidden, labels, head = _joint()
    with caplog.at_level(logging.WARNING, logger="sftmix"):
        got = _loss_and_grads(hidden, labels, head, chunk_size=4)
    assert any("torch.compile of the fused loss body failed" in r.getMessage() for r in caplog.records)
    assert fused.choose(hidden, 8, 8, LogitTransform(), torch.float64) == "eager"  # not retried
    monkeypatch.setenv(ENV, "eager")
    for g, w in zip(got, _loss_and_grads(hidden, labels, head, chunk_size=4)):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_linear_cross_entropy_fast_lane_stays_eager(monkeypatch):
    """Small calls never trigger a build under auto (the fast test lane and tiny models stay compiler-free)."""
    monkeypatch.delenv(ENV, raising=False)
    z = torch.randn(16, 8, requires_grad=True)
    w = torch.randn(32, 8, requires_grad=True)
    linear_cross_entropy(z, w, None, torch.randint(0, 32, (16,))).backward()
    assert fused.status()["last"] == "eager"


def test_chunk_budget_per_body(monkeypatch):
    """Eager: a Mixup pass keeps one more [chunk, V] buffer; the fused C++ body: NTP's buffers plus one scratch row
    per thread for a Mixup pass, taken out of the same budget."""
    monkeypatch.setitem(fused._state, "ext", object())
    monkeypatch.setitem(fused._state, "ext_error", None)
    monkeypatch.setenv("SFTMIX_LCE_CHUNK_MB", "192")
    z, v, ident = torch.zeros(4096, 8), 32000, LogitTransform()
    monkeypatch.setenv(ENV, "cpp")
    ntp_rows = kernel_chunk(None, z, v, ident, False)
    assert ntp_rows == 520  # 192 MiB / (32k x (4 + 2 x 4) bytes), a multiple of 8
    mix_rows = kernel_chunk(None, z, v, ident, True)
    assert mix_rows == chunk_rows(v, torch.float32, torch.float32, z.device, 2, torch.get_num_threads()) <= ntp_rows
    assert mix_rows * v * 12 + torch.get_num_threads() * v * 4 <= 192 << 20
    assert chunk_rows(v, torch.float32, torch.float32, z.device, 2, 16) == 512  # 16 threads' rows: one row less
    monkeypatch.setenv(ENV, "eager")
    assert kernel_chunk(None, z, v, ident, False) == ntp_rows
    assert kernel_chunk(None, z, v, ident, True) == 392  # 192 MiB / (32k x (4 + 3 x 4) bytes)
