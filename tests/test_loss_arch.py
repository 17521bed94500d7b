"""The loss against each architecture's own HF loss (logit transforms), and the lean path under hooked, LoRA'd
and sharded heads (no silent fallback)."""
import logging

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from sftmix.errors import UserError
from sftmix.loss import (
    LogitTransform, linear_cross_entropy, logit_transform, mixup_loss, ntp_loss, ntp_mixup_loss, response_token_nll,
)

VOCAB = 97
SMALL = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)

# (config class, model class, extra config): soft-caps and scales small enough to bite on random tiny weights.
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"final_logit_softcapping": 2.0, "head_dim": 8}),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"final_logit_softcapping": 2.0, "head_dim": 8}),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.25}),
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),
}
TRANSFORMED = {"gemma2", "gemma3", "cohere", "granite"}


def _model(arch):
    cfg_cls, model_cls, extra = ARCHS[arch]
    torch.manual_seed(0)
    cfg = getattr(transformers, cfg_cls)(**SMALL, **extra)
    model = getattr(transformers, model_cls)(cfg).eval()
    with torch.no_grad():  # larger head weights, so logits are big enough for a soft-cap/scale to matter
        model.get_output_embeddings().weight.mul_(8.0)
    return model


def _batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (4, 14), generator=gen)
    labels = ids.clone()
    labels[0, :5] = -100
    labels[1, :3] = -100
    labels[1, 10:] = -100
    labels[2, :2] = -100
    labels[2, 6:8] = -100
    labels[3, :9] = -100
    return ids, labels


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_ntp_and_mixup_match_the_models_own_loss(arch):
    model = _model(arch)
    ids, labels = _batch()
    out = model(ids, labels=labels, output_hidden_states=True)
    head, h = model.get_output_embeddings(), out.hidden_states[-1]
    tr = logit_transform(model.config)
    assert tr.identity == (arch not in TRANSFORMED)
    for lean in (True, False):
        torch.testing.assert_close(ntp_loss(h, labels, head, transform=model.config, lean=lean), out.loss)
    if arch in TRANSFORMED:  # the test can fail: ignoring the transform gives another loss
        assert abs(ntp_loss(h, labels, head).item() - out.loss.item()) > 0.05
    # Gradients of every parameter agree with HF's loss.
    hf_grads = torch.autograd.grad(out.loss, list(model.parameters()))
    h2 = model(ids, output_hidden_states=True).hidden_states[-1]
    ours = torch.autograd.grad(ntp_loss(h2, labels, head, transform=tr), list(model.parameters()))
    for g, r in zip(ours, hf_grads):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5)
    # Mixup through the transform: mix hidden states, head, then T, against a naive per-pair loop.
    pa, pb, lam = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0.3, 0.8])
    hd = h.detach().double().requires_grad_()
    head64 = nn.Linear(head.in_features, head.out_features, bias=head.bias is not None).double()
    head64.load_state_dict({k: v.double() for k, v in head.state_dict().items()})
    ref = _naive_mixup(hd[pa], hd[pb], labels[pa], labels[pb], lambda z: tr(head64(z)), lam)
    got = mixup_loss(hd[pa], hd[pb], labels[pa], labels[pb], head64, lam, transform=tr)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    total, _, mix = ntp_mixup_loss(hd, labels, head64, pa, pb, lam, mu=0.5, transform=tr)
    torch.testing.assert_close(mix, ref.detach(), rtol=1e-10, atol=1e-12)
    sep = ntp_loss(hd, labels, head64, transform=tr) + 0.5 * ref
    torch.testing.assert_close(total, sep, rtol=1e-10, atol=1e-12)
    for g, r in zip(torch.autograd.grad(total, (hd, head64.weight)), torch.autograd.grad(sep, (hd, head64.weight))):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)
    # Scoring (no grad, chunked) gives each row's mean response NLL under the same transform.
    with torch.no_grad():
        logits = model(ids).logits[:, :-1].float()
    nll = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none")
    m = labels[:, 1:] != -100
    torch.testing.assert_close(response_token_nll(h, labels, head, transform=tr).float(),
                               (nll * m).sum(1) / m.sum(1), rtol=1e-5, atol=1e-5)


def _naive_mixup(ha, hb, la, lb, head, lam):
    """The spec, literally: a loop over pairs and their first N = min(N_a, N_b) response positions."""
    losses = []
    for i in range(ha.shape[0]):
        pa = [t for t in range(ha.shape[1] - 1) if la[i, t + 1] != -100]
        pb = [t for t in range(hb.shape[1] - 1) if lb[i, t + 1] != -100]
        n = min(len(pa), len(pb))
        if n == 0:
            continue
        li = float(lam[i])
        logits = head(li * ha[i, pa[:n]] + (1 - li) * hb[i, pb[:n]])
        ya, yb = la[i, [t + 1 for t in pa[:n]]], lb[i, [t + 1 for t in pb[:n]]]
        losses.append((li * F.cross_entropy(logits, ya, reduction="none")
                       + (1 - li) * F.cross_entropy(logits, yb, reduction="none")).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize("tr", [LogitTransform(scale=0.6), LogitTransform(softcap=1.5),
                                LogitTransform(scale=2.0, softcap=3.0)])
def test_transform_chain_rule_gradcheck(tr):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(11, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(11, generator=gen, dtype=torch.float64, requires_grad=True)
    ya, yb = torch.randint(0, 11, (7,), generator=gen), torch.randint(0, 11, (7,), generator=gen)
    coef, tw = torch.rand(7, generator=gen, dtype=torch.float64), torch.rand(7, generator=gen, dtype=torch.float64)
    fn = lambda z, w, b: linear_cross_entropy(z, w, b, ya, yb, coef=coef, token_weight=tw, chunk_size=3, transform=tr)
    assert torch.autograd.gradcheck(fn, (z, w, b))
    logits = tr(F.linear(z, w, b))
    ref = (tw * (coef * F.cross_entropy(logits, ya, reduction="none")
                 + (1 - coef) * F.cross_entropy(logits, yb, reduction="none"))).sum()
    torch.testing.assert_close(fn(z, w, b), ref)


def test_logit_transform_from_config_and_unknown_keys():
    assert logit_transform(transformers.Gemma2Config(final_logit_softcapping=30.0)) == LogitTransform(softcap=30.0)
    assert logit_transform(transformers.CohereConfig(logit_scale=0.5)) == LogitTransform(scale=0.5)
    assert logit_transform(transformers.GraniteConfig(logits_scaling=8.0)) == LogitTransform(scale=0.125)
    assert logit_transform(transformers.Gemma2Config(final_logit_softcapping=None)).identity
    assert logit_transform(None).identity and logit_transform(transformers.LlamaConfig()).identity
    # Harmless keys (attention soft-cap, router logits) are not logit transforms.
    assert logit_transform(transformers.MixtralConfig(output_router_logits=True)).identity
    with pytest.raises(UserError, match="lm_head_multiplier"):
        logit_transform(transformers.LlamaConfig(lm_head_multiplier=2.0))
    with pytest.raises(UserError, match="output_logit_softcap"):
        logit_transform(transformers.LlamaConfig(output_logit_softcap=5.0))
    with pytest.raises(UserError, match="logits_scaling"):
        logit_transform(transformers.LlamaConfig(logits_scaling=2.0))
