"""IR-DRO (Chen et al. 2024): closed-form weights against a hand computation, the lean loss against full logits
(value and gradient), the variant's validation and a training step through the trainer."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.errors import UserError
from sftmix.loss.irdro import irdro_loss, irdro_weights
from sftmix.recipe import finetune
from sftmix.variants import get_variant
from test_recipe import tiny_cfg, weights


def test_weights_by_hand():
    # losses 1, 2, 3 at tau 1: exp(l - 3) / sum = e^-2, e^-1, 1 over (e^-2 + e^-1 + 1)
    z = math.exp(-2) + math.exp(-1) + 1
    w = irdro_weights(torch.tensor([1.0, 2.0, 3.0]), tau=1.0)
    assert torch.allclose(w, torch.tensor([math.exp(-2) / z, math.exp(-1) / z, 1 / z]), atol=1e-7)
    assert [round(x, 4) for x in w.tolist()] == [0.0900, 0.2447, 0.6652]
    # tau 2 halves the exponents; huge tau -> uniform; tiny tau -> all weight on the hardest example
    z2 = math.exp(-1) + math.exp(-0.5) + 1
    assert torch.allclose(irdro_weights(torch.tensor([1.0, 2.0, 3.0]), 2.0), torch.tensor([math.exp(-1), math.exp(-0.5), 1]) / z2)
    assert torch.allclose(irdro_weights(torch.tensor([1.0, 2.0, 3.0]), 1e6), torch.full((3,), 1 / 3), atol=1e-6)
    assert irdro_weights(torch.tensor([1.0, 2.0, 3.0]), 1e-3).tolist() == [0.0, 0.0, 1.0]
    assert irdro_weights(torch.tensor([1000.0, 1001.0]), 1.0).isfinite().all()  # max-subtracted
    with pytest.raises(ValueError):
        irdro_weights(torch.tensor([1.0]), 0.0)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 6, 16, generator=g, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(16, 40, bias=False, dtype=torch.float64)
    with torch.no_grad():
        head.weight.copy_(torch.randn(40, 16, generator=g, dtype=torch.float64))
    labels = torch.randint(0, 40, (3, 6), generator=g)
    labels[0, :2] = -100
    labels[1, :4] = -100  # 1 response token after the shift... plus example 2 with all 5
    labels[2, 0] = -100
    return hidden, head, labels


def _naive(hidden, head, labels, tau):
    logits = head(hidden[:, :-1])
    tgt = labels[:, 1:]
    ce = F.cross_entropy(logits.transpose(1, 2), tgt.clamp(min=0), reduction="none") * (tgt != -100)
    losses = ce.sum(1) / (tgt != -100).sum(1)
    w = torch.softmax(losses.detach() / tau, 0)
    return (w * losses).sum(), losses, w


@pytest.mark.parametrize("lean", [True, False])
def test_loss_and_gradient_match_full_logits(lean):
    hidden, head, labels = _batch()
    loss, losses, w = irdro_loss(hidden, labels, head, tau=0.7, lean=lean)
    (g_lean,) = torch.autograd.grad(loss, hidden)
    ref, ref_losses, ref_w = _naive(hidden, head, labels, 0.7)
    (g_ref,) = torch.autograd.grad(ref, hidden)
    assert torch.allclose(losses, ref_losses.detach()) and torch.allclose(w, ref_w)
    assert torch.allclose(loss, ref) and torch.allclose(g_lean, g_ref)
    assert not torch.allclose(w, torch.full_like(w, 1 / 3))  # the batch really is reweighted


def test_variant_registered_and_validated():
    v = get_variant("irdro")
    assert v.irdro_tau == 1.0 and not v.uses_mixup and v.to_dict()["irdro_tau"] == 1.0
    assert "irdro_tau" not in get_variant("ntp").to_dict()  # older variants keep their stage keys
    assert get_variant("irdro", irdro_tau=0.5).irdro_tau == 0.5
    with pytest.raises(UserError, match="IR-DRO reweights NTP alone"):
        get_variant("sftmix", irdro_tau=1.0)
    with pytest.raises(UserError, match="irdro_tau must be >= 0"):
        get_variant("irdro", irdro_tau=-1.0)


def test_irdro_trains_through_the_trainer(tmp_path, tiny_model_dir):
    res = finetune(get_variant("irdro"), tiny_cfg("max_steps=2", "save_steps=0"), tmp_path / "irdro", resume=False)
    assert math.isfinite(res.metrics["train_loss"])
    base, after = weights(Path(tiny_model_dir)), weights(tmp_path / "irdro" / "model")
    assert any(not torch.equal(base[k], after[k]) for k in base)
