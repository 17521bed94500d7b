"""CUDA checks of the loss kernels, for scripts/gpu_check.sh: prints one JSON object.

* our kernel under bf16 autocast with fp32 master weights (the Trainer's bf16 mode) vs an fp32 reference: loss
  and gradients, for a plain head and a Gemma-style soft-capped one;
* NTP through Liger Kernel's fused linear CE and cut-cross-entropy (where installed) vs ours, bf16 weights;
* the one-pass NTP + Mixup vs the two separate lean losses;
* peak CUDA memory of our NTP vs full logits at V = 128k.
"""
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from sftmix.loss import LogitTransform, ntp_loss, ntp_mixup_loss


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


def batch(n_rows, seq, d, v, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    hidden = (torch.randn(n_rows, seq, d, device="cuda", generator=g) * 2).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (n_rows, seq), device="cuda", generator=g)
    labels[:, : seq // 3] = -100
    return hidden, labels


def main():
    out = {"gpu": torch.cuda.get_device_name(0)}
    d, v = 2048, 128256
    torch.manual_seed(0)
    head = nn.Linear(d, v, bias=False, device="cuda")
    with torch.no_grad():
        head.weight.normal_(0, 0.02)
    for name, tr in (("plain", LogitTransform()), ("softcap30", LogitTransform(softcap=30.0))):
        hidden, labels = batch(4, 1024, d, v, torch.float32)
        ref = ntp_loss(hidden.double(), labels, head.double(), transform=tr, lean=False)
        g_ref = torch.autograd.grad(ref, (hidden, head.weight))
        head.float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            got = ntp_loss(hidden, labels, head, transform=tr)
        g_got = torch.autograd.grad(got, (hidden, head.weight))
        out[f"autocast_bf16_{name}"] = {"loss": float(got), "ref": float(ref), "loss_rel": abs(float(got - ref)) / float(ref),
                                        "grad_hidden_rel": rel(g_got[0], g_ref[0]), "grad_w_rel": rel(g_got[1], g_ref[1]),
                                        "grad_w_dtype": str(g_got[1].dtype)}
    head_bf = nn.Linear(d, v, bias=False, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        head_bf.weight.copy_(head.weight)
    hidden, labels = batch(8, 2048, d, v, torch.bfloat16, seed=1)
    ours = ntp_loss(hidden, labels, head_bf, kernel="sftmix")
    g_ours = torch.autograd.grad(ours, (hidden, head_bf.weight))
    for kernel, mod in (("liger", "liger_kernel"), ("cce", "cut_cross_entropy")):
        try:
            __import__(mod)
        except ImportError:
            out[kernel] = "not installed"
            continue
        try:
            got = ntp_loss(hidden, labels, head_bf, kernel=kernel)
            g = torch.autograd.grad(got, (hidden, head_bf.weight))
            out[kernel] = {"loss": float(got), "ours": float(ours), "loss_rel": abs(float(got - ours)) / float(ours),
                           "grad_hidden_rel": rel(g[0], g_ours[0]), "grad_w_rel": rel(g[1], g_ours[1])}
        except Exception as e:  # report, don't stop the check
            out[kernel] = f"error: {type(e).__name__}: {e}"[:300]
    pa, pb = torch.arange(4, device="cuda"), torch.arange(4, 8, device="cuda")
    lam = torch.rand(4, device="cuda")
    one = ntp_mixup_loss(hidden, labels, head_bf, pa, pb, lam)[0]
    two = ntp_mixup_loss(hidden, labels, head_bf, pa, pb, lam, one_pass=False)[0]
    out["one_pass_vs_two_pass_rel"] = abs(float(one - two)) / float(two)
    del one, two, g_ours
    for lean in (True, False):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        loss = ntp_loss(hidden, labels, head_bf, lean=lean)
        loss.backward()
        torch.cuda.synchronize()
        out[f"ntp_{'lean' if lean else 'full_logits'}"] = {
            "peak_mb_above_inputs": (torch.cuda.max_memory_allocated() - base) / 2**20,
            "seconds": time.perf_counter() - t0}
        hidden.grad = head_bf.weight.grad = None
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
