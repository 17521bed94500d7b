"""DeepSpeed ZeRO-3 check of the lean loss (run by scripts/gpu_check.sh with `deepspeed` or `torchrun`, or alone
with one process): NTP + Mixup steps of a tiny Llama under ZeRO-3 vs the same steps without DeepSpeed.

Under ZeRO-3 the head's weight is empty outside its forward; the loss must enter the head once (its hooks gather
the weight) and must not fall back to full logits. Writes OUT_JSON with both runs' losses and the weight diff.
argv: OUT_JSON
"""
import json
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from fsdp_loss import ROWS, STEPS, Seen, batch, build  # noqa: E402

from sftmix.loss import ntp_mixup_loss  # noqa: E402


def loss_of(model, ids, labels, step, kinds):
    hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    head = model.get_output_embeddings()
    kinds.add(f"{type(head.weight).__name__} numel={head.weight.numel()}")
    lam = torch.tensor([0.3, 0.7]) + 0.05 * step
    return ntp_mixup_loss(hidden, labels, head, torch.tensor([0, 1]), torch.tensor([2, 3]), lam.to(hidden.device),
                          mu=0.5)[0]


LR = 0.5

if __name__ == "__main__":
    import deepspeed

    out_path = sys.argv[1]
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"),
                 ("MASTER_PORT", "29655")):
        os.environ.setdefault(k, v)
    deepspeed.init_distributed()
    dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
    seen = Seen()
    logging.getLogger("sftmix").addHandler(seen)
    ids, labels = batch()
    ids, labels = ids[:4].to(dev), labels[:4].to(dev)
    ds_cfg = {"train_micro_batch_size_per_gpu": 4, "zero_allow_untested_optimizer": True, "gradient_clipping": 0.0,
              "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}, "fp16": {"enabled": False},
              "bf16": {"enabled": False}}
    model = build(False).to(dev)
    # The same plain SGD on both sides, so the weights compare the gradients, not two Adam implementations.
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
                                      config=ds_cfg)
    kinds, losses = set(), []
    for step in range(STEPS):
        loss = loss_of(engine.module, ids, labels, step, kinds)
        engine.backward(loss)
        engine.step()
        losses.append(float(loss))
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        zero = {k: v.detach().float().cpu().clone() for k, v in engine.module.state_dict().items()}
    ref = build(False).to(dev)
    opt = torch.optim.SGD(ref.parameters(), lr=LR)
    ref_losses = []
    for step in range(STEPS):
        loss = loss_of(ref, ids, labels, step, set())
        loss.backward()
        opt.step()
        opt.zero_grad()
        ref_losses.append(float(loss))
    diff = max(float((zero[k] - v.detach().float().cpu()).abs().max()) for k, v in ref.state_dict().items())
    with open(out_path, "w") as f:
        json.dump({"losses": losses, "ref_losses": ref_losses, "max_weight_diff": diff, "warnings": seen.msgs,
                   "head_weight_seen": sorted(kinds), "rows": ROWS}, f)
    print(json.dumps({"zero3_losses": losses, "ref_losses": ref_losses, "max_weight_diff": diff,
                      "warnings": seen.msgs}))
