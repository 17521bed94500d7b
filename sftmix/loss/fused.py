"""Fused bodies for one logits chunk of the kernel: NTP rows and Mixup slots, loss and gradient in one call.

The eager body in :mod:`.kernel` makes one full ``[rows, V]`` pass per elementwise op (the mixed logits, their
log-softmax, exp, two scaled adds into the gradient, ...). A fused body computes, per row or per slot's pair of rows,
the maxima, the exponentials and their sums, and the gradient in three sweeps over the row while it sits in cache,
the slot's mixed exponentials in the same loops as its rows' own. Backends (``SFTMIX_LCE_BACKEND``):

* ``cpp`` — ``csrc/lce_cpu.cpp``, vectorised with ATen's ``Vectorized`` for this CPU's ISA, threaded with
  ``at::parallel_for`` and in place over the chunk's logits (no second ``[chunk, V]`` buffer). Built on first use
  through ``torch.utils.cpp_extension`` (a C++ compiler and ninja; cached per machine and torch version).
* ``compile`` — :func:`chunk_body` (the same maths in torch ops) through ``torch.compile``: Triton on CUDA,
  Inductor's C++ on CPU.
* ``eager`` — the kernel's own op-by-op body.
* ``auto`` (default) — ``cpp`` on CPU for fp32/fp64 chunks of at least ``MIN_FUSED_LOGITS`` logits per call
  (smaller calls are not worth a build), else ``eager``; on CUDA ``eager`` until ``compile`` has been measured there
  (``scripts/gpu_check.sh``).

Neither fused body implements a soft-cap (its derivative needs the capped logits, which they do not keep): such a
model uses the eager body. A fused backend that cannot be built or compiled falls back to ``eager`` after one
warning that says why.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor

from core.errors import UserError
from .transform import LogitTransform
from .warn import warn_once

log = logging.getLogger("sftmix")

BACKENDS = ("auto", "eager", "cpp", "compile")
ENV = "SFTMIX_LCE_BACKEND"
MIN_FUSED_LOGITS = 1 << 20  # auto: smaller calls keep the eager body (tests, tiny models: no build for them)
SOURCE = Path(__file__).with_name("csrc") / "lce_cpu.cpp"
# ATen's Vectorized picks its implementation from these macros; the flags let the compiler emit those instructions.
_ISA_FLAGS = {
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-DCPU_CAPABILITY_AVX512",
               "-DCPU_CAPABILITY=AVX512"],
    "AVX2": ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"],
}

_state: dict = {"ext": None, "ext_error": None, "compiled": None, "compile_error": None, "last": None}


def requested() -> str:
    """The backend ``SFTMIX_LCE_BACKEND`` asks for (default ``auto``); a bad value is a ``UserError``."""
    want = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if want not in BACKENDS:
        raise UserError(f"{ENV}={want!r}: choose one of {', '.join(BACKENDS)}")
    return want


def _why(e: Exception) -> str:
    """An exception as one short line (a failed build's message holds the whole compiler log)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def cpu_extension():
    """The built ``lce_cpu`` extension module, building it on first use; None (after one warning) if it can't be."""
    if _state["ext"] is not None or _state["ext_error"] is not None:
        return _state["ext"]
    try:
        from torch.utils import cpp_extension  # ~0.3 s, pulls in setuptools: only when the kernel is built

        cap = str(torch.backends.cpu.get_cpu_capability()).upper()
        name = f"sftmix_lce_cpu_{cap.lower()}"
        flags = ["-O3", *_ISA_FLAGS.get(cap, [])]
        try:  # say so when this is the one slow build (the compiled module is cached per machine)
            built = Path(cpp_extension._get_build_directory(name, verbose=False), f"{name}.so").exists()
        except Exception:
            built = True
        if not built:
            log.warning("sftmix loss: building the fused CPU loss kernel for %s (once per machine and torch "
                        "version, about a minute)", cap)
        t0 = time.perf_counter()
        _state["ext"] = cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=flags, verbose=False)
        log.info("sftmix loss: fused CPU loss kernel (%s) ready in %.1f s", cap, time.perf_counter() - t0)
    except Exception as e:  # no compiler, no ninja, a read-only cache...: the eager body still works
        _state["ext_error"] = _why(e)
        warn_once("fused-cpp", "sftmix loss: the fused CPU loss kernel is unavailable (%s); using the eager "
                   "kernel (slower; SFTMIX_LCE_BACKEND=eager silences this)", _state["ext_error"])
    return _state["ext"]


def choose(z: Tensor, n_rows: int, vocab: int, tr: LogitTransform, compute_dtype: torch.dtype) -> str:
    """The body one kernel call runs: ``cpp``, ``compile`` or ``eager`` (see the module docstring)."""
    body = _choose(z, n_rows, vocab, tr, compute_dtype)
    _state["last"] = body
    return body


def _choose(z: Tensor, n_rows: int, vocab: int, tr: LogitTransform, compute_dtype: torch.dtype) -> str:
    want = requested()
    if want == "eager" or tr.softcap is not None:
        return "eager"
    dev = z.device.type
    acc = torch.promote_types(z.dtype, torch.float32)
    if want == "compile":
        return "eager" if _state["compile_error"] is not None else "compile"
    if dev != "cpu" or compute_dtype != acc or acc not in (torch.float32, torch.float64):
        if want == "cpp":
            warn_once(f"fused-cpp-{dev}-{compute_dtype}", "sftmix loss: SFTMIX_LCE_BACKEND=cpp needs fp32/fp64 "
                       "matmuls on CPU (here %s on %s); using the eager kernel", compute_dtype, dev)
        return "eager"
    if want == "auto" and n_rows * vocab < MIN_FUSED_LOGITS:
        return "eager"
    return "cpp" if cpu_extension() is not None else "eager"


def prepare(device: str = "cpu") -> str:
    """Build (or load) what the fused backend needs before timing or training starts; the backend in effect for a
    large fp32 call on ``device`` (``cpp``, ``compile`` or ``eager``)."""
    z = torch.zeros((1, 1), device=device)
    return _choose(z, MIN_FUSED_LOGITS, 1, LogitTransform(), torch.float32)


def status() -> dict:
    """What the fused backends did in this process (for provenance and `bench perf`)."""
    return {"requested": os.environ.get(ENV, "auto"), "last": _state["last"], "cpp": _state["ext"] is not None,
            "cpp_error": _state["ext_error"], "compile_error": _state["compile_error"]}


def cpp_chunk(x: Tensor, y: Tensor, yb: Optional[Tensor], coef: Optional[Tensor], n_pairs: int, lam: Tensor,
              ka: Tensor, kb: Tensor, rows: bool, grad: bool, scale: float) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`chunk_body` through the C++ extension, in place: the returned gradient is ``x`` itself."""
    tok, nll_m = _state["ext"].lce_chunk(x, y, yb, coef, n_pairs, lam, ka, kb, rows, grad, float(scale))
    return tok, nll_m, x


def chunk_body(x: Tensor, y: Tensor, yb: Optional[Tensor], coef: Optional[Tensor], n_pairs: int, lam: Tensor,
               ka: Tensor, kb: Tensor, rows: bool, grad: bool, scale: float
               ) -> tuple[Tensor, Tensor, Optional[Tensor]]:
    """One chunk's ``(tok, nll_m, g)`` in torch ops: the reference form of ``csrc/lce_cpu.cpp`` (whose header
    states the maths) and the function the ``compile`` backend compiles. ``x`` ``[c, V]`` raw logits, rows ``2i``
    and ``2i+1`` (``i < n_pairs``) a Mixup slot; ``g`` (None without ``grad``) is in ``x``'s accumulation dtype."""
    acc = torch.promote_types(x.dtype, torch.float32)
    t = x.to(acc) * scale
    p2 = 2 * n_pairs
    lse = torch.logsumexp(t, dim=-1)
    tgt = t.gather(1, y[:, None]).squeeze(1)
    if yb is not None:
        tgt = coef * tgt + (1 - coef) * t.gather(1, yb[:, None]).squeeze(1)
    tok = lse - tgt if rows else torch.zeros_like(lse)
    lam = lam[:n_pairs, None]
    m = lam * t[0:p2:2] + (1 - lam) * t[1:p2:2]
    lse_m = torch.logsumexp(m, dim=-1, keepdim=True)
    ya, yb_m = y[0:p2:2, None], y[1:p2:2, None]
    nll_m = (lse_m - lam * m.gather(1, ya) - (1 - lam) * m.gather(1, yb_m)).squeeze(1)
    if not grad:
        return tok, nll_m, None
    # targets as comparisons with a column index, not scatters: every [rows, V] term below is pointwise, so a
    # compiler fuses them into the one kernel that writes the gradient
    col = torch.arange(t.shape[1], device=t.device)
    if rows:
        g = torch.exp(t - lse[:, None])
        if yb is None:
            g = g - (col == y[:, None]).to(acc)
        else:
            g = g - coef[:, None] * (col == y[:, None]).to(acc) - (1 - coef[:, None]) * (col == yb[:, None]).to(acc)
    else:
        g = torch.zeros_like(t)
    q = torch.exp(m - lse_m) - lam * (col == ya).to(acc) - (1 - lam) * (col == yb_m).to(acc)
    k = torch.stack([ka[:n_pairs], kb[:n_pairs]], 1)[:, :, None]
    v = t.shape[1]
    pairs = (g[:p2].view(n_pairs, 2, v) + k * q[:, None, :]).view(p2, v)
    return tok, nll_m, torch.cat([pairs, g[p2:]]) * scale


def compiled_chunk(*args) -> Optional[tuple[Tensor, Tensor, Optional[Tensor]]]:
    """:func:`chunk_body` through ``torch.compile`` (dynamic shapes: one compile serves every chunk size); None
    after one warning if compiling fails (the caller then runs the eager body)."""
    if _state["compiled"] is None:
        _state["compiled"] = torch.compile(chunk_body, dynamic=True)
    try:
        return _state["compiled"](*args)
    except Exception as e:  # no Triton / no compiler / an Inductor bug: eager still works
        _state["compile_error"] = _why(e)
        warn_once("fused-compile", "sftmix loss: torch.compile of the fused loss body failed (%s); using the "
                   "eager kernel", _state["compile_error"])
        return None
