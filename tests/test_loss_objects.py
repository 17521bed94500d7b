"""The loss objects (sftmix.loss.base/losses): one family per variant from the registry, exactly the functional
losses and the naive references, no host sync in a training micro-step, log parts read only at log time, and the
README's "use the loss in your own loop" example."""
import contextlib
import io
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from test_loss import naive_mixup
from transformers import TrainingArguments

from core.errors import UserError
from sftmix.data import PaddedCollator
from sftmix.loss import (
    LOSSES, GradAccumScale, IRDROLoss, LossContext, LossOptions, MixupLoss, NTPLoss, SFTLoss, irdro_loss, loss_for,
    ntp_loss, ntp_mixup_loss, register_loss, response_token_nll, sample_lambda,
)
from sftmix.trainer import ExampleDataset, SFTMixTrainer
from sftmix.variants import VARIANTS, get_variant

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 64


def _model(arch="llama"):
    torch.manual_seed(0)
    small = dict(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0)
    if arch == "gemma2":  # a soft-capped head: the loss must read the cap off the config
        return transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**small, head_dim=8,
                                                                        final_logit_softcapping=2.0))
    return transformers.LlamaForCausalLM(transformers.LlamaConfig(**small, tie_word_embeddings=False))


def _inputs(seed=0, batch=4, length=12, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, length, 16, generator=g, dtype=dtype, requires_grad=True)
    labels = torch.randint(1, VOCAB, (batch, length), generator=g)
    for i in range(batch):  # prompts of different lengths, one row with a single response token
        labels[i, : 2 + 3 * i % (length - 2)] = -100
    labels[1, 3:-1] = -100
    head = torch.nn.Linear(16, VOCAB, bias=False, dtype=dtype)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, 16, generator=g, dtype=dtype))
    return hidden, labels, head


def _grads(loss, hidden, head):
    return torch.autograd.grad(loss, (hidden, head.weight))


# ---- the registry: variant data -> family ---------------------------------------------------------------------------
def test_every_registered_variant_gets_its_family_with_its_configuration():
    opts = LossOptions(lean=False, chunk_size=16, kernel="auto", lambda_per="batch", one_pass=False)
    for name in VARIANTS:
        v = get_variant(name)
        loss = loss_for(v, opts)
        assert loss.options is opts
        if v.irdro_tau:
            assert type(loss) is IRDROLoss and (loss.tau, loss.ntp_weight) == (v.irdro_tau, v.ntp_weight)
        elif v.mu:
            assert type(loss) is MixupLoss
            assert (loss.ntp_weight, loss.mu, loss.alpha, loss.pairing) == (v.ntp_weight, v.mu, v.alpha, v.pairing)
        else:
            assert type(loss) is NTPLoss and loss.ntp_weight == v.ntp_weight
    # a run's overrides are the variant's data, so they reach the loss
    assert loss_for(get_variant("sftmix", alpha=2.0, mu=0.5)).alpha == 2.0
    assert [n for n, _ in LOSSES.describe()] == ["ntp", "mixup", "irdro"]
    assert "MixupLoss(ntp_weight=1.0, mu=0.2, alpha=0.5, pairing='conf_unconf'" in repr(loss_for(get_variant("sftmix")))


def test_bad_options_are_one_line_user_errors():
    with pytest.raises(UserError, match="ntp_kernel 'fast'"):
        LossOptions(kernel="fast")
    with pytest.raises(UserError, match="lambda_per"):
        LossOptions(lambda_per="token")
    with pytest.raises(UserError, match="chunk_size"):
        LossOptions(chunk_size=0)
    with pytest.raises(UserError, match="pairing"):
        MixupLoss(pairing="conf_unconfident")
    with pytest.raises(UserError, match="tau"):
        IRDROLoss(tau=0.0)


def test_a_family_registered_later_claims_the_variants_it_handles(monkeypatch):
    monkeypatch.setattr(LOSSES, "_items", dict(LOSSES._items))
    monkeypatch.setattr(LOSSES, "_help", dict(LOSSES._help))

    @register_loss
    class HalfNTP(NTPLoss):
        """NTP at half weight for sharp-alpha variants (a plugin's family)"""

        name = "half-ntp"

        @classmethod
        def handles(cls, variant):
            return variant.alpha == 0.25 and not variant.uses_mixup

        @classmethod
        def from_variant(cls, variant, options=LossOptions()):
            return cls(variant.ntp_weight / 2, options)

    assert type(loss_for(get_variant("ntp", alpha=0.25))) is HalfNTP
    assert type(loss_for(get_variant("ntp"))) is NTPLoss and type(loss_for(get_variant("sftmix"))) is MixupLoss
    with pytest.raises(ValueError, match="already registered"):
        register_loss(HalfNTP)


# ---- numbers: the objects are the functional losses, which equal the naive references ------------------------------
def test_ntp_object_is_ntp_loss_bit_for_bit_and_records_per_example_nll():
    hidden, labels, head = _inputs()
    items = torch.tensor(37.0, dtype=torch.float64)
    sc = GradAccumScale(ga=2, num_items=items, ntp_scale=1.0)
    out = NTPLoss(ntp_weight=1.0)(hidden, labels, head, LossContext(scale=sc, record_nll=True))
    ref = ntp_loss(hidden, labels, head, num_items=items)
    assert torch.equal(out.loss, ref)
    assert all(map(torch.equal, _grads(out.loss, hidden, head), _grads(ref, hidden, head)))
    assert torch.equal(out.ntp, ref.detach() * 2) and out.mixup is None and not out.ntp.requires_grad
    torch.testing.assert_close(out.example_nll, response_token_nll(hidden, labels, head).float())
    # the naive full-logits reference (HF's causal-LM loss) agrees
    naive = F.cross_entropy(head(hidden[:, :-1]).flatten(0, 1), labels[:, 1:].flatten(), reduction="sum") / items
    torch.testing.assert_close(out.loss, naive, rtol=1e-12, atol=1e-12)
    assert NTPLoss()(hidden, labels, head, LossContext(training=False, record_nll=True)).example_nll is None


@pytest.mark.parametrize("lambda_per", ["pair", "batch"])
@pytest.mark.parametrize("one_pass", [True, False])
def test_mixup_object_is_ntp_mixup_loss_bit_for_bit_and_the_naive_spec(lambda_per, one_pass):
    hidden, labels, head = _inputs(seed=1)
    loss_fn = MixupLoss(ntp_weight=1.0, mu=0.2, alpha=0.5, options=LossOptions(lambda_per=lambda_per,
                                                                                one_pass=one_pass))
    sc = GradAccumScale(ga=2, num_items=None, ntp_scale=0.5)
    out = loss_fn(hidden, labels, head, LossContext(scale=sc, rng=lambda: torch.Generator().manual_seed(7)))
    lam = sample_lambda(1 if lambda_per == "batch" else 2, 0.5, torch.Generator().manual_seed(7)).expand(2)
    a, b = torch.arange(2), torch.arange(2) + 2  # rows k and k + B/2
    ref, ntp, mix = ntp_mixup_loss(hidden, labels, head, a, b, lam, ntp_weight=1.0, mu=0.2, scale=sc,
                                   options=LossOptions(one_pass=one_pass))
    assert torch.equal(out.loss, ref)
    assert all(map(torch.equal, _grads(out.loss, hidden, head), _grads(ref, hidden, head)))
    assert torch.equal(out.ntp, ntp * 2) and torch.equal(out.mixup, mix * 2)
    spec = (F.cross_entropy(head(hidden[:, :-1]).flatten(0, 1), labels[:, 1:].flatten()) * 0.5
            + 0.2 * 0.5 * naive_mixup(hidden[a], hidden[b], labels[a], labels[b], head, lam))
    torch.testing.assert_close(out.loss, spec, rtol=1e-12, atol=1e-12)


def test_mixup_pairs_evaluation_and_mixup_only():
    hidden, labels, head = _inputs(seed=2, batch=6)
    cc = MixupLoss(pairing="conf_conf")
    confident = torch.tensor([True, False, True, True, True, False])  # pairs (0,3) cc, (1,4) uc, (2,5) cu
    assert [t.tolist() for t in cc.pairs(6, hidden.device, confident)] == [[0], [3]]
    assert [t.tolist() for t in MixupLoss(pairing="unconf_unconf").pairs(6, hidden.device, confident)] == [[], []]
    assert [t.tolist() for t in cc.pairs(6, hidden.device, None)] == [[0, 1, 2], [3, 4, 5]]  # no flags: all mix
    # evaluation: the NTP term alone (Mixup needs training's pairs and λ); mixup-only then has no loss at all
    ev = LossContext(training=False)
    out = loss_for(get_variant("sftmix"))(hidden, labels, head, ev)
    assert torch.equal(out.loss, ntp_loss(hidden, labels, head)) and out.mixup is None
    only = loss_for(get_variant("mixup-only"))
    assert only(hidden, labels, head, ev).loss.item() == 0.0
    out = only(hidden, labels, head, LossContext(rng=lambda: torch.Generator().manual_seed(0)))
    assert out.ntp is None and torch.equal(out.loss, out.mixup)  # mu = 1, no NTP term in loss or logs


def test_irdro_object_is_irdro_loss_and_soft_cap_comes_from_the_model():
    hidden, labels, head = _inputs(seed=3)
    out = IRDROLoss(tau=0.5)(hidden, labels, head, LossContext(scale=GradAccumScale(ga=4, ntp_scale=0.25),
                                                               record_nll=True))
    ref, losses, _ = irdro_loss(hidden, labels, head, 0.5)
    assert torch.equal(out.loss, ref * 0.25) and torch.equal(out.ntp, ref.detach())
    torch.testing.assert_close(out.example_nll, losses.float())
    # Gemma-2's final soft-cap is read off the config by set_model_output; the loss then equals the model's own
    model = _model("gemma2")
    loss_fn = loss_for(get_variant("ntp")).set_model_output(model)
    assert loss_fn.transform.softcap == 2.0
    ids = torch.randint(1, VOCAB, (2, 10))
    lab = ids.clone()
    lab[:, :4] = -100
    own = model(ids, labels=lab, output_hidden_states=True)
    out = loss_fn(own.hidden_states[-1], lab, model.get_output_embeddings())
    torch.testing.assert_close(out.loss, own.loss, rtol=1e-5, atol=1e-6)


# ---- the trainer: no host sync per micro-step; the parts reach the log line ----------------------------------------
SYNCS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


@contextlib.contextmanager
def count_host_syncs(model):
    """Count the Tensor methods that hand a value to Python (each a device sync on an accelerator) while active,
    except inside the model's own forward (which is transformers', not the loss's)."""
    calls, paused = [], [False]
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def wrap(name, fn):
        def counted(self, *a, **k):
            if not paused[0]:
                calls.append(name)
            return fn(self, *a, **k)
        return counted

    hooks = [model.register_forward_pre_hook(lambda *a: paused.__setitem__(0, True)),
             model.register_forward_hook(lambda *a: paused.__setitem__(0, False))]
    for name, fn in originals.items():
        setattr(torch.Tensor, name, wrap(name, fn))
    try:
        yield calls
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
        for h in hooks:
            h.remove()


def _trainer(tmp_path, variant, **kw):
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(8):
        ids = torch.randint(1, VOCAB, (int(torch.randint(6, 12, (1,), generator=g)),), generator=g).tolist()
        rows.append({"input_ids": ids, "labels": [-100] * (1 + i % 3) + ids[1 + i % 3:]})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True,
                             save_strategy="no", remove_unused_columns=False, disable_tqdm=True)
    trainer = SFTMixTrainer(model=_model(), args=args, train_dataset=ExampleDataset(rows),
                            data_collator=PaddedCollator(0), variant=get_variant(variant),
                            split_labels=["confident" if i % 3 else "unconfident" for i in range(8)], **kw)
    trainer.current_gradient_accumulation_steps = 2  # normally set by the training loop
    ds = trainer.train_dataset
    batches = [PaddedCollator(0)([ds[i] for i in (0, 1, 4, 5)]), PaddedCollator(0)([ds[i] for i in (2, 3, 6, 7)])]
    return trainer, batches


class Recorder:
    def __init__(self):
        self.records = []

    def __call__(self, idx, nll, step):
        self.records.extend(zip(idx, nll))


@pytest.mark.parametrize("variant,kw", [
    ("ntp", {"loss_recorder": "rec"}), ("sftmix", {}), ("sftmix-cc", {}), ("mixup-only", {}), ("irdro", {}),
    ("sftmix", {"lambda_per": "batch", "one_pass": False}),
])
def test_a_training_micro_step_never_hands_a_value_to_python(tmp_path, variant, kw):
    rec = Recorder() if kw.get("loss_recorder") else None
    trainer, batches = _trainer(tmp_path, variant, **{**kw, **({"loss_recorder": rec} if rec else {})})
    model = trainer.model.train()
    with count_host_syncs(model) as calls:  # the counter sees what it should
        float(torch.ones(())), torch.ones(2).tolist(), model(torch.ones(1, 3, dtype=torch.long))
    assert calls == ["__float__", "tolist"]
    outs = []
    with count_host_syncs(model) as calls:
        for batch in batches:  # two micro-steps of one accumulation step, forward + loss + backward
            loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(40))
            loss.backward()
            outs.append(loss.detach())
    assert calls == [], f"host syncs in a micro-step: {calls}"
    assert rec is None or rec.records == []  # delivered at log time, not per micro-step
    # the log line gets the parts' means since the last line, as before (and the recorder its batches)
    expected = {}
    for name in ("ntp_loss", "mixup_loss"):
        if name in trainer._loss_sums:
            total, count = trainer._loss_sums[name]
            assert count == 2 and total.dtype == torch.float64
            expected[name] = round(float(total) / count, 6)
    assert ("mixup_loss" in expected) == get_variant(variant).uses_mixup
    assert ("ntp_loss" in expected) == (variant != "mixup-only")
    logs = {"loss": float(sum(outs))}
    trainer.log(logs)
    assert {k: logs[k] for k in expected} == expected and trainer._loss_sums == {}
    if rec is not None:
        assert sorted(i for i, _ in rec.records) == list(range(8))
        assert all(math.isfinite(v) and v > 0 for _, v in rec.records)


# ---- the README example runs as printed ----------------------------------------------------------------------------
def test_readme_use_the_loss_in_your_own_loop_example_runs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Use the loss in your own loop"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "readme_example"})
    lines = out.getvalue().split("\n")[:-1]
    assert len(lines) == 3, lines
    values = [[float(x) for x in line.split()[1:]] for line in lines]
    assert all(len(v) == 2 and all(math.isfinite(x) and x > 0 for x in v) for v in values)
    assert values[-1][0] < values[0][0]  # it trains
    assert issubclass(MixupLoss, SFTLoss)
