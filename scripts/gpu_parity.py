"""CUDA checks of the loss kernels, for scripts/gpu_check.sh: prints one JSON object.

* our kernel under bf16 autocast with fp32 master weights (the Trainer's bf16 mode) vs an fp32 reference: loss
  and gradients, for a plain head and a Gemma-style soft-capped one;
* NTP through Liger Kernel's fused linear CE and cut-cross-entropy (where installed) vs ours, bf16 weights;
* the one-pass NTP + Mixup vs the two separate lean losses;
* peak CUDA memory of our NTP vs full logits at V = 128k;
* the loss's chunk bodies (sftmix.loss.fused): torch.compile of the fused body (Triton) vs the eager body, loss and
  gradients, and the loss alone (forward + backward) timed for NTP and NTP + Mixup with each body.

``--dry`` runs the same code on CPU at tiny sizes (gpu_check.sh's GPU_CHECK_DRY=1), to rehearse it.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from sftmix.loss import LogitTransform, LossOptions, fused, ntp_loss, ntp_mixup_loss


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


DEV = "cuda"


def batch(n_rows, seq, d, v, dtype, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    hidden = (torch.randn(n_rows, seq, d, device=DEV, generator=g) * 2).to(dtype).requires_grad_()
    labels = torch.randint(0, v, (n_rows, seq), device=DEV, generator=g)
    labels[:, : seq // 3] = -100
    return hidden, labels


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def loss_bodies(hidden, labels, head, backends, repeats=3):
    """Per chunk body: NTP + Mixup loss and gradients relative to the eager body's, and the best-of-``repeats``
    time of the loss alone (forward + backward) for NTP and for NTP + Mixup, after one warm-up (the compile)."""
    n = hidden.shape[0]
    pa, pb = torch.arange(n // 2, device=DEV), torch.arange(n // 2, n, device=DEV)
    lam = torch.rand(n // 2, device=DEV)

    def sftmix():
        total = ntp_mixup_loss(hidden, labels, head, pa, pb, lam)[0]
        return (total, *torch.autograd.grad(total, (hidden, head.weight)))

    def ntp():
        loss = ntp_loss(hidden, labels, head)
        return (loss, *torch.autograd.grad(loss, (hidden, head.weight)))

    res, ref = {}, None
    for backend in backends:
        os.environ["SFTMIX_LCE_BACKEND"] = backend
        try:
            got = sftmix()
            if ref is None:
                ref = got
            times = {}
            for name, fn in (("ntp", ntp), ("sftmix", sftmix)):
                fn()  # warm-up: a compile happens here
                best = float("inf")
                for _ in range(repeats):
                    sync()
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    best = min(best, time.perf_counter() - t0)
                times[name] = best
            res[backend] = {"body": fused.status()["last"], "loss": float(got[0]),
                            "loss_rel": abs(float(got[0] - ref[0])) / abs(float(ref[0])),
                            "grad_hidden_rel": rel(got[1], ref[1]), "grad_w_rel": rel(got[2], ref[2]),
                            "ntp_s": times["ntp"], "sftmix_s": times["sftmix"],
                            "sftmix_over_ntp": times["sftmix"] / times["ntp"]}
        except Exception as e:  # report, don't stop the check
            res[backend] = f"error: {type(e).__name__}: {e}"[:300]
    os.environ.pop("SFTMIX_LCE_BACKEND", None)
    return res


def main():
    global DEV
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes: rehearse the script without a GPU")
    dry = ap.parse_args().dry
    DEV = "cpu" if dry else "cuda"
    out = {"gpu": "none (dry run on CPU)" if dry else torch.cuda.get_device_name(0)}
    d, v = (64, 1000) if dry else (2048, 128256)
    rows, seq = (4, 64) if dry else (8, 2048)
    torch.manual_seed(0)
    head = nn.Linear(d, v, bias=False, device=DEV)
    with torch.no_grad():
        head.weight.normal_(0, 0.02)
    for name, tr in (("plain", LogitTransform()), ("softcap30", LogitTransform(softcap=30.0))):
        hidden, labels = batch(rows // 2, seq // 2, d, v, torch.float32)
        ref = ntp_loss(hidden.double(), labels, head.double(), transform=tr, lean=False)
        g_ref = torch.autograd.grad(ref, (hidden, head.weight))
        head.float()
        with torch.autocast(DEV, dtype=torch.bfloat16):
            got = ntp_loss(hidden, labels, head, transform=tr)
        g_got = torch.autograd.grad(got, (hidden, head.weight))
        out[f"autocast_bf16_{name}"] = {"loss": float(got), "ref": float(ref), "loss_rel": abs(float(got - ref)) / float(ref),
                                        "grad_hidden_rel": rel(g_got[0], g_ref[0]), "grad_w_rel": rel(g_got[1], g_ref[1]),
                                        "grad_w_dtype": str(g_got[1].dtype)}
    head_bf = nn.Linear(d, v, bias=False, device=DEV, dtype=torch.bfloat16)
    with torch.no_grad():
        head_bf.weight.copy_(head.weight)
    hidden, labels = batch(rows, seq, d, v, torch.bfloat16, seed=1)
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
    pa, pb = torch.arange(rows // 2, device=DEV), torch.arange(rows // 2, rows, device=DEV)
    lam = torch.rand(rows // 2, device=DEV)
    one = ntp_mixup_loss(hidden, labels, head_bf, pa, pb, lam)[0]
    two = ntp_mixup_loss(hidden, labels, head_bf, pa, pb, lam, options=LossOptions(one_pass=False))[0]
    out["one_pass_vs_two_pass_rel"] = abs(float(one - two)) / float(two)
    del one, two, g_ours
    for lean in (True, False):
        if DEV != "cuda":
            break
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
    # The chunk bodies on the bf16 head (eager first: the reference); on CPU (dry) fp32 and the C++ body too.
    if DEV != "cuda":  # CPU matmuls in fp32 (the C++ body takes fp32/fp64 only)
        hidden, head_bf = hidden.detach().float().requires_grad_(), head.float()
    out["loss_bodies"] = loss_bodies(hidden, labels, head_bf,
                                     ("eager", "compile") + (("cpp",) if DEV == "cpu" else ()),
                                     repeats=1 if dry else 3)
    json.dump(out, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
