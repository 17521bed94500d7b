"""Tests for sftmix.loss: chunked linear CE, HF-equivalent NTP loss, and the Mixup loss against a naive loop."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from core.errors import UserError
from sftmix.loss import LogitTransform, chunk_rows, linear_cross_entropy, mixup_loss, ntp_loss, sample_lambda

V, D = 37, 8


def make_labels(spans, length, gen):
    """[B, T] HF labels: each row's ``spans`` [(start, stop), ...] hold random tokens, the rest is -100."""
    labels = torch.full((len(spans), length), -100, dtype=torch.long)
    for i, row in enumerate(spans):
        for s, e in row:
            labels[i, s:e] = torch.randint(0, V, (e - s,), generator=gen)
    return labels


def naive_mixup(ha, hb, la, lb, head, lam):
    """The spec, literally: a Python loop over pairs and positions."""
    losses = []
    for i in range(ha.shape[0]):
        pa = [t for t in range(ha.shape[1] - 1) if la[i, t + 1] != -100]
        pb = [t for t in range(hb.shape[1] - 1) if lb[i, t + 1] != -100]
        n = min(len(pa), len(pb))
        if n == 0:
            continue
        li = float(lam[i]) if torch.is_tensor(lam) and lam.dim() else float(lam)
        z = li * ha[i, pa[:n]] + (1 - li) * hb[i, pb[:n]]
        logits = head(z)
        ya, yb = la[i, [t + 1 for t in pa[:n]]], lb[i, [t + 1 for t in pb[:n]]]
        ce_a, ce_b = F.cross_entropy(logits, ya, reduction="none"), F.cross_entropy(logits, yb, reduction="none")
        losses.append((li * ce_a + (1 - li) * ce_b).mean())
    return torch.stack(losses).mean()


# (spans of a, spans of b, T_a, T_b): different prompt/response lengths, multi-turn gaps, a pair with N_a = 0.
CASES = {
    "mixed": (
        [[(3, 9)], [(2, 4)], [(5, 12)], []],
        [[(1, 5)], [(6, 11)], [(2, 3), (6, 10)], [(2, 8)]],
        12,
        11,
    ),
    "multi_turn_and_left_pad": (
        [[(4, 6), (8, 10)], [(0, 7)]],
        [[(2, 9)], [(5, 6)]],
        10,
        14,
    ),
}


@pytest.fixture
def head():
    torch.manual_seed(0)
    return nn.Linear(D, V, bias=True).double()


def _tensors(case, seed=0):
    spans_a, spans_b, ta, tb = CASES[case]
    gen = torch.Generator().manual_seed(seed)
    la, lb = make_labels(spans_a, ta, gen), make_labels(spans_b, tb, gen)
    ha = torch.randn(len(spans_a), ta, D, generator=gen, dtype=torch.float64, requires_grad=True)
    hb = torch.randn(len(spans_b), tb, D, generator=gen, dtype=torch.float64, requires_grad=True)
    return ha, hb, la, lb


def _grads(loss, *tensors):
    return torch.autograd.grad(loss, tensors)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("per_pair", [True, False])
def test_mixup_matches_naive_loop(head, case, per_pair):
    ha, hb, la, lb = _tensors(case)
    lam = torch.rand(ha.shape[0], dtype=torch.float64) if per_pair else 0.3
    ref = naive_mixup(ha, hb, la, lb, head, lam)
    ref_g = _grads(ref, ha, hb, head.weight, head.bias)
    for kwargs in ({"lean": True}, {"lean": False}):
        got = mixup_loss(ha, hb, la, lb, head, lam, **kwargs)
        torch.testing.assert_close(got, ref)
        for g, r in zip(_grads(got, ha, hb, head.weight, head.bias), ref_g):
            torch.testing.assert_close(g, r)
    # A generic callable head takes the plain (non-fused) path and agrees too.
    got = mixup_loss(ha, hb, la, lb, lambda x: head(x), lam)
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("lam, side", [(1.0, "a"), (0.0, "b")])
def test_mixup_lambda_extremes_reduce_to_ce(head, lam, side):
    ha, hb, la, lb = _tensors("mixed", seed=1)
    losses = []
    for i in range(ha.shape[0]):
        pa = (la[i, 1:] != -100).nonzero().flatten()
        pb = (lb[i, 1:] != -100).nonzero().flatten()
        n = min(len(pa), len(pb))
        if n:
            h, lab, pos = (ha, la, pa) if side == "a" else (hb, lb, pb)
            losses.append(F.cross_entropy(head(h[i, pos[:n]]), lab[i, pos[:n] + 1]))
    expected = torch.stack(losses).mean()
    for lean in (True, False):
        torch.testing.assert_close(mixup_loss(ha, hb, la, lb, head, lam, lean=lean), expected)


def test_mixup_no_valid_pairs_is_zero_with_grad(head):
    gen = torch.Generator().manual_seed(0)
    ha = torch.randn(2, 6, D, dtype=torch.float64, requires_grad=True)
    hb = torch.randn(2, 5, D, dtype=torch.float64, requires_grad=True)
    la = make_labels([[], [(2, 5)]], 6, gen)
    lb = make_labels([[(1, 4)], []], 5, gen)
    for lean in (True, False):
        loss = mixup_loss(ha, hb, la, lb, head, 0.5, lean=lean)
        assert loss.item() == 0.0
        ga, gb = _grads(loss, ha, hb)
        assert torch.count_nonzero(ga) == 0 and torch.count_nonzero(gb) == 0


def test_mixup_rejects_bad_lambda_shape(head):
    ha, hb, la, lb = _tensors("mixed")
    with pytest.raises(ValueError, match="lam"):
        mixup_loss(ha, hb, la, lb, head, torch.rand(3))


def _lce_inputs(n=7, v=11, d=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, d, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(v, generator=gen, dtype=torch.float64, requires_grad=True)
    ya, yb = torch.randint(0, v, (n,), generator=gen), torch.randint(0, v, (n,), generator=gen)
    coef = torch.rand(n, generator=gen, dtype=torch.float64)
    tw = torch.rand(n, generator=gen, dtype=torch.float64)
    return z, w, b, ya, yb, coef, tw


def test_linear_cross_entropy_gradcheck():
    z, w, b, ya, yb, coef, tw = _lce_inputs()
    fn = lambda z, w, b: linear_cross_entropy(z, w, b, ya, yb, coef=coef, token_weight=tw, chunk_size=3)
    assert torch.autograd.gradcheck(fn, (z, w, b))


def test_linear_cross_entropy_matches_plain_and_chunking_invariant():
    z, w, b, ya, yb, coef, tw = _lce_inputs(n=10)
    logits = F.linear(z, w, b)
    plain = (tw * (coef * F.cross_entropy(logits, ya, reduction="none")
                   + (1 - coef) * F.cross_entropy(logits, yb, reduction="none"))).sum()
    ref_g = _grads(plain, z, w, b)
    for chunk in (1, 3, 10, None):
        got = linear_cross_entropy(z, w, b, ya, yb, coef=coef, token_weight=tw, chunk_size=chunk)
        torch.testing.assert_close(got, plain)
        for g, r in zip(_grads(got, z, w, b), ref_g):
            torch.testing.assert_close(g, r)
    # Defaults: coef None = plain CE on target_a, token_weight None = token mean; no bias; frozen weight.
    w_frozen = w.detach()
    got = linear_cross_entropy(z, w_frozen, None, ya, chunk_size=4)
    ref = F.cross_entropy(F.linear(z, w_frozen), ya)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(_grads(got, z)[0], _grads(ref, z)[0])


def test_linear_cross_entropy_bf16_close_to_fp32():
    z, w, b, ya, yb, coef, tw = _lce_inputs(n=16, v=50, d=16)
    zb, wb, bb = (t.detach().bfloat16().requires_grad_() for t in (z, w, b))
    got = linear_cross_entropy(zb, wb, bb, ya, yb, coef=coef, token_weight=tw, chunk_size=5)
    assert got.dtype == torch.float32
    ref = linear_cross_entropy(*(t.detach().float().requires_grad_() for t in (z, w, b)), ya, yb,
                               coef=coef, token_weight=tw)
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)
    got.backward()
    assert zb.grad.dtype == wb.grad.dtype == torch.bfloat16 and torch.isfinite(wb.grad.float()).all()


def test_linear_cross_entropy_no_grad_mode():
    z, w, b, ya, *_ = _lce_inputs()
    with torch.no_grad():
        got = linear_cross_entropy(z, w, b, ya)
    torch.testing.assert_close(got, F.cross_entropy(F.linear(z, w, b), ya))


@pytest.fixture(scope="module")
def tiny_llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=4)
    return LlamaForCausalLM(cfg).eval()


def test_ntp_loss_equals_hf_causal_lm_loss(tiny_llama):
    model = tiny_llama
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (3, 12), generator=gen)
    labels = ids.clone()
    labels[0, :5] = -100  # prompt
    labels[1, :3] = -100
    labels[1, 9:] = -100  # padding
    labels[2, :2] = -100
    labels[2, 6:8] = -100  # multi-turn gap
    out = model(ids, labels=labels, output_hidden_states=True)
    h = out.hidden_states[-1]
    for lean in (True, False):
        torch.testing.assert_close(ntp_loss(h, labels, model.lm_head, lean=lean), out.loss)
    # Under gradient accumulation HF divides the summed loss by num_items_in_batch instead.
    hf_sum = model(ids, labels=labels, num_items_in_batch=torch.tensor(40)).loss
    torch.testing.assert_close(ntp_loss(h, labels, model.lm_head, num_items=torch.tensor(40)), hf_sum)
    torch.testing.assert_close(ntp_loss(h, labels, model.lm_head, num_items=40, lean=False), hf_sum)
    # A plain callable head goes through the fallback.
    torch.testing.assert_close(ntp_loss(h, labels, lambda x: model.lm_head(x)), out.loss)

    grads = []
    for lean in (True, False):
        model.zero_grad()
        h = model(ids, output_hidden_states=True).hidden_states[-1]
        ntp_loss(h, labels, model.lm_head, lean=lean).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g_lean, g_plain in zip(*grads):
        torch.testing.assert_close(g_lean, g_plain, rtol=1e-4, atol=1e-6)


def test_ntp_loss_no_valid_tokens():
    h = torch.randn(2, 4, D, requires_grad=True)
    loss = ntp_loss(h, torch.full((2, 4), -100), nn.Linear(D, V))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(h.grad) == 0


def test_sample_lambda_reproducible_and_beta_distributed():
    a = sample_lambda(5, 0.5, torch.Generator().manual_seed(3))
    b = sample_lambda(5, 0.5, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    torch.manual_seed(1)
    c = sample_lambda(5, 0.5)
    torch.manual_seed(1)
    torch.testing.assert_close(c, sample_lambda(5, 0.5))
    alpha = 0.5
    x = sample_lambda(20000, alpha, torch.Generator().manual_seed(0))
    assert ((x >= 0) & (x <= 1)).all()
    assert abs(x.mean().item() - 0.5) < 0.01
    assert abs(x.var().item() - 1 / (4 * (2 * alpha + 1))) < 0.005  # Beta(α, α) variance
    with pytest.raises(UserError, match="alpha"):
        sample_lambda(3, 0.0)


# ---- ntp_mixup_loss: one LM-head pass for NTP + Mixup --------------------------------------------------------
from sftmix.loss import GradAccumScale, LossOptions, ntp_mixup_loss  # noqa: E402

# Rows of one batch (first half a, second half b as the trainer pairs them): prompts of different lengths,
# multi-turn responses, a row with no response (a pair with N = 0), a fully unpaired response in row 3's partner.
JOINT_ROWS = [
    [(3, 9)], [(2, 4)], [(5, 12)], [], [(1, 3), (6, 8)],
    [(1, 5)], [(6, 11)], [(2, 3), (6, 10)], [(2, 8)], [(4, 12)],
]


def _joint_inputs(bias, seed=0, rows=JOINT_ROWS, length=12):
    gen = torch.Generator().manual_seed(seed)
    labels = make_labels(rows, length, gen)
    hidden = torch.randn(len(rows), length, D, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(seed)
    head = nn.Linear(D, V, bias=bias).double()
    return hidden, labels, head


def _joint_reference(hidden, labels, head, pa, pb, lam, ntp_weight, mu, num_items, ntp_scale, mix_scale):
    ntp = ntp_loss(hidden, labels, head, num_items=num_items) * ntp_scale
    mix = mixup_loss(hidden[pa], hidden[pb], labels[pa], labels[pb], head, lam) * mix_scale
    return ntp_weight * ntp + mu * mix, ntp, mix


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ntp_weight", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("pairs", ["all", "subset", "none_valid", "empty"])
@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4])
def test_ntp_mixup_matches_separate_losses(bias, ntp_weight, pairs, chunk_size):
    hidden, labels, head = _joint_inputs(bias)
    pa, pb = {
        "all": ([0, 1, 2, 3, 4], [5, 6, 7, 8, 9]),
        "subset": ([1, 4], [6, 9]),  # conf_conf-style: only some pairs mix
        "none_valid": ([3], [8]),  # N = 0: the Mixup term is 0
        "empty": ([], []),
    }[pairs]
    pa, pb = torch.tensor(pa, dtype=torch.long), torch.tensor(pb, dtype=torch.long)
    lam = torch.rand(len(pa), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = dict(ntp_weight=ntp_weight, mu=0.3, num_items=None, ntp_scale=0.5, mix_scale=0.25)
    ref, ref_ntp, ref_mix = _joint_reference(hidden, labels, head, pa, pb, lam, **kw)
    scale = GradAccumScale(ga=4, ntp_scale=0.5)  # the reference's ntp_scale 0.5, mix_scale 1/ga = 0.25
    got, ntp, mix = ntp_mixup_loss(hidden, labels, head, pa, pb, lam, ntp_weight=ntp_weight, mu=0.3, scale=scale,
                                   options=LossOptions(chunk_size=chunk_size))
    assert torch.allclose(got, ref, atol=1e-12, rtol=1e-10)
    assert torch.allclose(mix, ref_mix, atol=1e-12) and not mix.requires_grad
    if ntp_weight:
        assert torch.allclose(ntp, ref_ntp, atol=1e-12) and not ntp.requires_grad
    params = [hidden, head.weight] + ([head.bias] if bias else [])
    if ref.requires_grad and (ntp_weight or pairs in ("all", "subset")):
        for g, r in zip(_grads(got, *params), _grads(ref, *params)):
            assert torch.allclose(g, r, atol=1e-12, rtol=1e-9)


def test_ntp_mixup_num_items_scalar_lambda_and_lean_fallback():
    hidden, labels, head = _joint_inputs(True, seed=3)
    pa, pb = torch.arange(5), torch.arange(5, 10)
    kw = dict(ntp_weight=1.0, mu=0.2, num_items=torch.tensor(40), ntp_scale=2.0, mix_scale=1.0)
    ref = _joint_reference(hidden, labels, head, pa, pb, 0.7, **kw)[0]
    ref_grads = torch.autograd.grad(ref, (hidden, head.weight), retain_graph=True)
    scale = GradAccumScale(ga=1, num_items=kw["num_items"], ntp_scale=2.0)  # mean_scale 1 = mix_scale
    for lean in (True, False):
        got, _, _ = ntp_mixup_loss(hidden, labels, head, pa, pb, 0.7, mu=0.2, scale=scale,
                                   options=LossOptions(lean=lean))
        assert torch.allclose(got, ref, atol=1e-12)
        for g, r in zip(_grads(got, hidden, head.weight), ref_grads):
            assert torch.allclose(g, r, atol=1e-12)
    # A head that is not a plain nn.Linear goes through the separate losses.
    wrapped = nn.Sequential(head)
    got = ntp_mixup_loss(hidden, labels, wrapped, pa, pb, 0.7, mu=0.2, scale=scale)[0]
    assert torch.allclose(got, ref, atol=1e-12)
    with torch.no_grad():
        got = ntp_mixup_loss(hidden, labels, head, pa, pb, 0.7, mu=0.2, scale=scale)[0]
        assert torch.allclose(got, ref, atol=1e-12)


def test_ntp_mixup_rejects_overlapping_pairs():
    hidden, labels, head = _joint_inputs(True)
    with pytest.raises(ValueError, match="distinct"):
        ntp_mixup_loss(hidden, labels, head, torch.tensor([0, 1]), torch.tensor([1, 2]), 0.5)


def test_ntp_mixup_float32_close_to_separate():
    hidden, labels, head = _joint_inputs(True, seed=5)
    hidden, head = hidden.detach().float().requires_grad_(), head.float()
    pa, pb = torch.arange(5), torch.arange(5, 10)
    lam = torch.rand(5, generator=torch.Generator().manual_seed(2))
    ref = _joint_reference(hidden, labels, head, pa, pb, lam, 1.0, 0.2, None, 1.0, 1.0)[0]
    got = ntp_mixup_loss(hidden, labels, head, pa, pb, lam)[0]
    assert torch.allclose(got, ref, atol=1e-5)
    for g, r in zip(_grads(got, hidden, head.weight, head.bias), _grads(ref, hidden, head.weight, head.bias)):
        assert torch.allclose(g, r, atol=1e-5)


def test_autocast_bf16_matmuls_with_fp32_master_weights():
    """Under autocast the kernel's matmuls run in bf16 like F.linear would, the softmax and the weight-gradient
    accumulation in fp32: the same loss as autocast F.linear + fp32 cross-entropy, gradients to bf16 accuracy."""
    z, w, b, ya, yb, coef, tw = _lce_inputs(n=40, v=300, d=32)
    z32, w32 = z.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    tr = LogitTransform(softcap=5.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy(z32, w32, None, ya, yb, coef=coef.float(), token_weight=tw.float(), chunk_size=7,
                                   transform=tr)
        logits = F.linear(z32, w32)
    assert logits.dtype == torch.bfloat16 and got.dtype == torch.float32
    lf = tr(logits.float())
    ref = (tw.float() * (coef.float() * F.cross_entropy(lf, ya, reduction="none")
                         + (1 - coef.float()) * F.cross_entropy(lf, yb, reduction="none"))).sum()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)  # same bf16 logits, same fp32 math after
    g_got = torch.autograd.grad(got, (z32, w32))
    g_ref = torch.autograd.grad(ref, (z32, w32))
    for g, r in zip(g_got, g_ref):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g, r, rtol=2e-2, atol=2e-3)  # backward matmuls in bf16 (fp32 accumulation)


def test_chunk_rows_follow_the_memory_budget(monkeypatch):
    cpu = torch.device("cpu")
    # Default CPU budget: 192 MiB of [chunk, V] temporaries (fp32 logits + 2 fp32 buffers), rounded down to 8 rows.
    assert chunk_rows(32000, torch.float32, torch.float32, cpu) == 520  # 201,326,592 // (32,000 * 12) = 524
    assert chunk_rows(128000, torch.float32, torch.float32, cpu) == 128  # // (128,000 * 12) = 131
    # bf16 logits take less room than fp32 ones: more rows for the same budget.
    assert chunk_rows(32000, torch.bfloat16, torch.float32, cpu) > 520
    monkeypatch.setenv("SFTMIX_LCE_CHUNK_MB", "1")
    assert chunk_rows(1000, torch.float32, torch.float32, cpu) == 80  # 2**20 // (1000 * 12) = 87 -> multiple of 8
    assert chunk_rows(10**7, torch.float32, torch.float32, cpu) == 8  # never below 8 rows
