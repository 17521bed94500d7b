"""The loss against each architecture's own HF loss (logit transforms), and the lean path under hooked, LoRA'd
and sharded heads (no silent fallback)."""
import logging

import pytest
import torch
import torch.nn.functional as F
import transformers
from test_loss import naive_mixup
from torch import nn

import sftmix.loss.warn
from core.errors import UserError
from sftmix.loss import (
    LogitTransform, LossOptions, linear_cross_entropy, logit_transform, mixup_loss, ntp_loss, ntp_mixup_loss,
    response_token_nll,
)
from sftmix.trainer import SFTMixTrainer
from sftmix.variants import get_variant
from support import ROOT

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


@pytest.fixture(autouse=True)
def fresh_fallback_warnings(monkeypatch):
    """Fallbacks warn once per process: start each test with none seen, so a fallback can't pass unnoticed."""
    monkeypatch.setattr(sftmix.loss.warn, "_WARNED", set())


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
    ref = naive_mixup(hd[pa], hd[pb], labels[pa], labels[pb], lambda z: tr(head64(z)), lam)
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


# ---- no silent fallback: sharded, hooked and LoRA'd heads ----------------------------------------------------
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("mode, port", [("root", 29641), ("head", 29642), ("tied", 29643), ("fsdp1", 29644)])
def test_fsdp_two_processes_same_loss_and_weights_as_one(tmp_path, mode, port):
    """FSDP2 (fully_shard) and FSDP1, gloo, CPU, 2 ranks: same losses and weights as unsharded, no fallback."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    out = tmp_path / "fsdp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(ROOT / "tests/scripts/fsdp_loss.py"), str(out), mode]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["world"] == 2 and r["warnings"] == []  # the lean path ran: no fallback warning
    assert r["losses"] == pytest.approx(r["ref_losses"], rel=1e-6)
    assert r["weights_moved"] > 1e-3 and r["max_weight_diff"] < 1e-5
    if mode == "head":  # outside its own forward the head's weight is a shard; our loss ran inside that forward
        assert r["head_weight_types"] == ["DTensor"]


class _GatheringHead(nn.Linear):
    """Stands in for a ZeRO-3 partitioned head: the weight is empty outside forward; hooks gather/release it."""

    def __init__(self, src: nn.Linear):
        super().__init__(src.in_features, src.out_features, bias=src.bias is not None, dtype=src.weight.dtype)
        self.full = src.weight.detach().clone()
        self.gathers = 0
        self.weight = nn.Parameter(torch.empty(0, dtype=self.full.dtype))
        self.register_forward_pre_hook(self._gather)
        self.register_forward_hook(self._release)

    def _gather(self, mod, args):
        self.gathers += 1
        self.weight.data = self.full

    def _release(self, mod, args, out):
        self.weight.data = torch.empty(0, dtype=self.full.dtype)


def _pairs_inputs(seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(6, 10, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 50, (6, 10), generator=gen)
    for i in range(6):
        labels[i, : 2 + i] = -100
    return hidden, labels, torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([0.2, 0.5, 0.9])


def test_hooked_head_is_gathered_once_and_exact(caplog):
    hidden, labels, pa, pb, lam = _pairs_inputs()
    torch.manual_seed(0)
    plain = nn.Linear(16, 50, bias=False).double()
    tr = LogitTransform(softcap=3.0)
    ref = ntp_mixup_loss(hidden, labels, plain, pa, pb, lam, transform=tr, options=LossOptions(one_pass=False))[0]
    ref_gh, ref_gw = torch.autograd.grad(ref, (hidden, plain.weight))
    hooked = _GatheringHead(plain)
    with caplog.at_level(logging.WARNING, logger="sftmix"):
        got = ntp_mixup_loss(hidden, labels, hooked, pa, pb, lam, transform=tr)[0]
    # one pass through the head's hooks for both terms, and no fallback warning
    assert hooked.gathers == 1 and not [r for r in caplog.records if r.name.startswith("sftmix")]
    assert hooked.weight.numel() == 0  # released after the forward
    hooked.weight.data = hooked.full  # ZeRO-3's pre-backward hook on the output re-gathers before backward
    got.backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(hidden.grad, ref_gh)
    # the gradient lands on the (re-gathered, as ZeRO-3 does before backward) parameter, full shape
    assert hooked.weight.grad is not None
    torch.testing.assert_close(hooked.weight.grad, ref_gw)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_lora_head_lean_matches_full_logits(dropout, caplog):
    peft = pytest.importorskip("peft")
    model = _model("gemma2")
    model = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                       target_modules=["lm_head", "q_proj"]))
    model.train()
    with torch.no_grad():  # B starts at 0: make the adapter matter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    ids, labels = _batch(1)
    head = model.get_output_embeddings()
    assert type(head).__name__ == "Linear" and hasattr(head, "lora_A")  # peft's LoRA layer, not nn.Linear
    pa, pb, lam = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0.4, 0.6])
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    results = []
    for lean in (True, False):
        torch.manual_seed(5)  # the same dropout masks for both (lean draws them in the same order)
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        torch.manual_seed(7)
        with caplog.at_level(logging.WARNING, logger="sftmix"):
            loss = ntp_loss(h, labels, head, transform=model.config, lean=lean)
        results.append((loss.detach(), torch.autograd.grad(loss, lora)))
    assert not [r for r in caplog.records if r.name.startswith("sftmix")]  # no fallback (other loggers: other threads)
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for g, r in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    if dropout == 0.0:  # the joint kernel (one pass) equals the two separate passes for a LoRA head too
        h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        one = ntp_mixup_loss(h, labels, head, pa, pb, lam, transform=model.config)[0]
        two = ntp_mixup_loss(h, labels, head, pa, pb, lam, transform=model.config,
                             options=LossOptions(lean=False))[0]
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)


def test_unbypassable_head_warns_once_with_the_cost(caplog):
    hidden, labels, pa, pb, lam = _pairs_inputs()
    torch.manual_seed(0)
    head = nn.Sequential(nn.Linear(16, 50).double())
    with caplog.at_level(logging.WARNING, logger="sftmix"):
        a = ntp_mixup_loss(hidden, labels, head, pa, pb, lam)[0]
        ntp_mixup_loss(hidden, labels, head, pa, pb, lam)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "Sequential" in msgs[0] and "MB" in msgs[0], msgs
    torch.testing.assert_close(a, ntp_mixup_loss(hidden, labels, head[0], pa, pb, lam)[0])


def test_ntp_kernel_choice_off_cuda_is_ours_and_bad_names_are_refused():
    hidden, labels, *_ = _pairs_inputs()
    torch.manual_seed(0)
    head = nn.Linear(16, 50).double()
    ref = ntp_loss(hidden, labels, head)
    for kernel in ("auto", "liger", "cce"):  # CUDA-only kernels: on CPU our kernel runs, same numbers
        torch.testing.assert_close(ntp_loss(hidden, labels, head, kernel=kernel), ref)
    with pytest.raises(UserError, match="kernel"):
        ntp_loss(hidden, labels, head, kernel="fast")

    with pytest.raises(UserError, match="ntp_kernel"):
        SFTMixTrainer(model=_model("llama"), variant=get_variant("ntp"), ntp_kernel="fast")


@pytest.mark.slow
def test_zero3_same_loss_and_weights_as_plain(tmp_path):
    """DeepSpeed ZeRO-3 (1 process, CPU): the head's weight is empty outside its forward; the loss enters it once,
    gives the same losses and SGD weights as without DeepSpeed, and never falls back."""
    pytest.importorskip("deepspeed")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MASTER_PORT="29658")
    out = tmp_path / "zero3.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tests/scripts/zero3_loss.py"), str(out)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["warnings"] == [] and "Parameter numel=0" in r["head_weight_seen"]
    assert r["losses"] == pytest.approx(r["ref_losses"], rel=1e-5)
    assert r["max_weight_diff"] < 1e-5
