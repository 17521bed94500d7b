"""The one chunked kernel: NTP is its zero-slot case, equal to plain full-logits cross-entropy; and the trainer's
single gradient-accumulation scaling helper."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sftmix.loss import LogitTransform, LossOptions, ntp_loss, ntp_mixup_loss
from sftmix.loss.kernel import Terms, fused_linear_cross_entropy
from sftmix.trainer import GradAccumScale, grad_accum_scale

V, D = 41, 8
TRANSFORMS = {"identity": LogitTransform(), "softcap": LogitTransform(softcap=2.0),
              "scale+softcap": LogitTransform(scale=0.5, softcap=3.0), "scale": LogitTransform(scale=1.7)}


def _inputs(seed=0, bias=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(4, 11, D, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, V, (4, 11), generator=gen)
    labels[0, :4] = -100  # prompt
    labels[1, :2] = -100
    labels[1, 8:] = -100  # padding
    labels[2, 3:6] = -100  # multi-turn gap
    labels[3, :] = -100  # no response at all
    torch.manual_seed(seed)
    head = nn.Linear(D, V, bias=bias).double()
    with torch.no_grad():
        head.weight.mul_(4.0)  # logits large enough for the soft-cap to bite
    return hidden, labels, head


def _plain_ce(hidden, labels, head, tr):
    """Full logits, the transform, and F.cross_entropy's token mean over the valid shifted positions."""
    logits = tr(head(hidden[:, :-1]))
    return F.cross_entropy(logits.reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def _grads(loss, params):
    return torch.autograd.grad(loss, params, retain_graph=True)


@pytest.mark.parametrize("tr", list(TRANSFORMS.values()), ids=list(TRANSFORMS))
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("chunk_size", [None, 1, 4])
def test_ntp_is_the_zero_pair_case_and_plain_cross_entropy(tr, bias, chunk_size):
    hidden, labels, head = _inputs(bias=bias)
    params = [hidden, head.weight] + ([head.bias] if bias else [])
    ref = _plain_ce(hidden, labels, head, tr)
    ref_grads = _grads(ref, params)
    none = torch.tensor([], dtype=torch.long)
    ntp = ntp_loss(hidden, labels, head, transform=tr)
    total, ntp_part, mix_part = ntp_mixup_loss(hidden, labels, head, none, none, 0.5, mu=0.3, transform=tr,
                                               options=LossOptions(chunk_size=chunk_size))
    assert mix_part.item() == 0.0 and not ntp_part.requires_grad
    for got in (ntp, total, ntp_part):
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    for got in (ntp, total):
        for g, r in zip(_grads(got, params), ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tr", list(TRANSFORMS.values()), ids=list(TRANSFORMS))
def test_kernel_row_term_without_slots_is_weighted_cross_entropy(tr):
    """The kernel itself, with per-row weights and no Mixup slots, against the weighted full-logits CE."""
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(13, D, generator=gen, dtype=torch.float64, requires_grad=True)
    w = (4 * torch.randn(V, D, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(V, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, V, (13,), generator=gen)
    tw = torch.rand(13, generator=gen, dtype=torch.float64)
    ref = (tw * F.cross_entropy(tr(F.linear(z, w, b)), y, reduction="none")).sum()
    for chunk in (1, 5, 13):
        tok = torch.zeros(13, dtype=torch.float64)
        total, row_sum, mix_sum = fused_linear_cross_entropy(z, w, b, Terms(y=y, row_w=tw, tok_out=tok), chunk, tr)
        torch.testing.assert_close(total, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(row_sum, ref.detach(), rtol=1e-12, atol=1e-12)
        assert mix_sum.item() == 0.0
        torch.testing.assert_close(tok, F.cross_entropy(tr(F.linear(z, w, b)), y, reduction="none").detach())
        for g, r in zip(_grads(total, [z, w, b]), _grads(ref, [z, w, b])):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def test_grad_accum_scale_is_the_one_place():
    # No num_items: each micro-batch's token mean (and any per-micro-batch mean) is divided by the step count.
    sc = grad_accum_scale(4)
    assert sc == GradAccumScale(ga=4, num_items=None, ntp_scale=0.25) and sc.mean_scale == 0.25
    # HF's num_items_in_batch: the NTP sum is divided by it, unscaled on one rank ...
    n = torch.tensor(40)
    sc = grad_accum_scale(4, n, world_size=1, average_tokens_across_devices=True)
    assert sc.num_items is n and sc.ntp_scale == 1.0 and sc.mean_scale == 0.25 and sc.ga == 4
    # ... multiplied by the rank count when tokens are averaged across ranks (DDP then averages the gradients).
    assert grad_accum_scale(2, n, world_size=3, average_tokens_across_devices=True).ntp_scale == 3.0
    assert grad_accum_scale(2, n, world_size=3, average_tokens_across_devices=False).ntp_scale == 1.0

    # Accumulated over micro-batches, the scaled NTP terms give the whole step's loss.
    hidden, labels, head = _inputs(seed=2)
    halves = [slice(0, 2), slice(2, 4)]
    whole = ntp_loss(hidden, labels, head)
    n_items = (labels[:, 1:] != -100).sum()
    sc = grad_accum_scale(2, n_items)
    acc = sum(ntp_loss(hidden[h], labels[h], head, num_items=sc.num_items) * sc.ntp_scale for h in halves)
    torch.testing.assert_close(acc, whole)
    sc = grad_accum_scale(2)  # token means per micro-batch, averaged over the step
    acc = sum(ntp_loss(hidden[h], labels[h], head) * sc.ntp_scale for h in halves)
    torch.testing.assert_close(acc, sum(ntp_loss(hidden[h], labels[h], head) for h in halves) / 2)
