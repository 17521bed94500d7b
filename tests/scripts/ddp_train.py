"""Run under `torchrun --nproc_per_node 2`: SFTMix training over gloo; each rank writes a hash of its weights."""
import hashlib
import json
import os
import sys

import torch
from transformers import TrainerCallback

from sftmix.config import TrainConfig, apply_overrides, split_overrides
from sftmix.recipe import finetune
from sftmix.variants import get_variant


class WeightHash(TrainerCallback):
    def __init__(self, path):
        self.path = path

    def on_train_end(self, args, state, control, model=None, **kw):
        h = hashlib.sha256()
        for name, p in sorted(model.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        with open(self.path, "w") as f:
            json.dump({"rank": args.process_index, "world": args.world_size, "hash": h.hexdigest(),
                       "steps": state.global_step}, f)


if __name__ == "__main__":
    out, confidence = sys.argv[1], sys.argv[2]
    cfg = TrainConfig()
    apply_overrides(cfg, split_overrides(sys.argv[3:]))
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    finetune(get_variant("sftmix"), cfg, out, confidence=confidence,
             callbacks=[WeightHash(os.path.join(out, f"rank{rank}.json"))])
