"""Run under `torchrun --nproc_per_node 2`: NTP + Mixup training steps of a tiny Llama under FSDP2
(`fully_shard`, gloo, CPU); rank 0 also runs the same steps unsharded and writes both losses and weights.

argv: OUT_JSON MODE, MODE = root (the head is in the root's parameter group) | head (the head has its own
FSDP group, so its weight is gathered by its hooks) | tied (tied embeddings, head in the root group) | fsdp1
(FullyShardedDataParallel, flat parameters).
"""
import json
import logging
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from transformers import LlamaConfig, LlamaForCausalLM

from sftmix.loss import ntp_mixup_loss

STEPS, ROWS = 3, 8  # 8 rows: rank r trains rows 4r..4r+3 (pairs (0, 2), (1, 3) within each rank's rows)


class Seen(logging.Handler):
    def __init__(self):
        super().__init__()
        self.msgs = []

    def emit(self, record):
        self.msgs.append(record.getMessage())


def build(tie):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, tie_word_embeddings=tie, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 97, (ROWS, 12), generator=gen)
    labels = ids.clone()
    for i in range(ROWS):
        labels[i, : 2 + i % 5] = -100
    return ids, labels


def loss_of(model, ids, labels, step):
    hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states[-1]
    lam = torch.tensor([0.3, 0.7]) + 0.05 * step
    inner = getattr(model, "module", model)  # FSDP1 wraps the model
    head = inner.get_output_embeddings()
    kinds.add(type(head.weight).__name__)
    return ntp_mixup_loss(hidden, labels, head, torch.tensor([0, 1]), torch.tensor([2, 3]), lam, mu=0.5)[0]


def full_state(model):
    out = {}
    if hasattr(model, "module"):  # FSDP1: gather the full parameters
        with FullyShardedDataParallel.summon_full_params(model):
            return {k.replace("_fsdp_wrapped_module.", ""): v.detach().clone()
                    for k, v in model.module.state_dict().items()}
    for k, v in model.state_dict().items():
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        out[k] = v.detach().clone()
    return out


if __name__ == "__main__":
    out_path, mode = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    seen = Seen()
    logging.getLogger("sftmix").addHandler(seen)
    kinds = set()
    ids, labels = batch()
    per = ROWS // world

    model = build(mode == "tied")
    if mode == "fsdp1":  # the older FSDP (flat parameters), one unit per decoder layer plus the root
        from functools import partial

        from torch.distributed.fsdp import FullyShardedDataParallel
        from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        policy = partial(transformer_auto_wrap_policy, transformer_layer_cls={LlamaDecoderLayer})
        model = FullyShardedDataParallel(model, auto_wrap_policy=policy, device_id=torch.device("cpu"),
                                         use_orig_params=False)
    else:
        for layer in model.model.layers:
            fully_shard(layer)
        if mode == "head":
            fully_shard(model.lm_head)
        fully_shard(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for step in range(STEPS):
        sl = slice(rank * per, (rank + 1) * per)
        loss = loss_of(model, ids[sl], labels[sl], step)
        loss.backward()  # FSDP averages the gradients over ranks
        opt.step()
        opt.zero_grad()
        t = loss.detach().clone()
        dist.all_reduce(t)
        losses.append(float(t) / world)
    sharded = full_state(model)
    fsdp_kinds = sorted(kinds)

    if rank == 0:  # the same steps, unsharded: mean of the ranks' losses
        kinds = set()
        ref = build(mode == "tied")
        opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
        ref_losses = []
        for step in range(STEPS):
            parts = [loss_of(ref, ids[r * per:(r + 1) * per], labels[r * per:(r + 1) * per], step)
                     for r in range(world)]
            loss = sum(parts) / world
            loss.backward()
            opt.step()
            opt.zero_grad()
            ref_losses.append(float(loss))
        ref_state = full_state(ref)
        max_diff = max(float((sharded[k] - ref_state[k]).abs().max()) for k in ref_state)
        moved = max(float((ref_state[k] - build(mode == "tied").state_dict()[k]).abs().max()) for k in ref_state)
        with open(out_path, "w") as f:
            json.dump({"losses": losses, "ref_losses": ref_losses, "max_weight_diff": max_diff,
                       "weights_moved": moved, "head_weight_types": fsdp_kinds, "warnings": seen.msgs,
                       "world": world}, f)
    dist.destroy_process_group()
