"""`bench perf`: what SFTMix costs over NTP, side by side, with the machine description.

Every measurement runs in a fresh worker process (``python -m bench.perf --worker SPEC``, see :mod:`.protocol`),
so peak memory is that configuration's alone. On CPU each worker runs with 1 thread and
``OMP_WAIT_POLICY=PASSIVE`` (on a shared machine, spinning OpenMP threads inflate both sides of a ratio and push
it toward 1), and the repeats are interleaved across configurations (round 1: every configuration once, round 2:
again...), so a change in others' load hits all alike; the fastest round counts. The load average is recorded
beside every measurement.

* ``step``: one optimizer step (``Trainer.training_step`` = forward + loss + backward, then the AdamW step) of a
  random-init Llama on random tokens whose response (loss) part is the last 50-70% of each sequence, for ``ntp``,
  ``sftmix`` (one-pass lean loss), ``sftmix-2pass`` (lean NTP and lean Mixup as two passes over the head),
  ``sftmix-naive`` (full-logits Mixup), ``hf-loss`` (a plain ``transformers.Trainer``: the model's own
  ``model(labels=...)`` loss over full logits) and, on CUDA, ``ntp-liger`` / ``ntp-cce`` (NTP through Liger
  Kernel's fused linear CE / cut-cross-entropy, when installed); TRL's ``SFTTrainer`` in its own section.
  Step time is the fastest timed step (on CPU the targets use its process CPU time). Peak memory: on CPU the
  worker runs with ``MALLOC_MMAP_THRESHOLD_`` so freed tensors go back to the OS, VmHWM is reset through
  ``/proc/self/clear_refs`` after warm-up; ``peak`` = VmHWM during the timed steps minus the RSS before the model
  existed (weights, gradients, optimizer state, activations), ``step peak`` = VmHWM minus the RSS just before the
  timed steps (what one step adds: activations, logits, gradients); on GPU the same from the CUDA allocator.
* ``scaling``: ``ntp`` / ``sftmix`` / ``hf-loss`` steps at V in {32k, 128k} x T in {256, 1024} (CPU).
* ``dynamics``: the cost of training dynamics on the tiny preset: one NTP epoch alone, the paper's offline
  scoring (the epoch + C no-grad scoring passes) and the online option (losses recorded in the epoch's own
  forward passes), as multiples of the NTP epoch, and the split agreement of online vs offline.
* ``scoring``: ``sftmix.dynamics.response_nll`` against a bare no-grad ``model(input_ids).logits`` forward at two
  vocabulary sizes (throughput and step-peak memory: the chunked kernel keeps it flat in V).
* ``generation``: ``hf`` vs ``vllm`` backends (``bench.backends``) on the same prompts, greedy: throughput and
  the fraction of identical completions; the vllm worker runs with the vllm venv's python.
* ``rerun``: a finished ``bench run`` re-run, through ``bench.pipeline.run_pipeline`` when it exists.
* ``view``: `bench view` of a fabricated 805-item x 8-variant AlpacaEval-shaped run: file size, build time, and in
  headless Chromium the time to the first items and to all items (:mod:`.view`).

Modules: :mod:`.shapes` (sections, configurations, shapes), :mod:`.fabricate` (random models and rows),
:mod:`.meter` (peak memory), :mod:`.trainers` (ours, HF's, TRL's), :mod:`.workers` (the measurements),
:mod:`.protocol` (the worker subprocess), :mod:`.targets`, :mod:`.report` (machine info, Markdown), :mod:`.run`.
"""
from .fabricate import build_model, collate, random_examples
from .protocol import RESULT_TAG, run_worker, worker_main
from .report import PerfReport, machine_info, render_markdown
from .run import _merge_rounds, run_perf
from .shapes import (CUDA_STEP_CONFIGS, DEFAULT_VLLM_PYTHON, PEAK_FLOPS, SCALING_CONFIGS, SECTIONS, SHAPES,
                     STEP_CONFIGS, model_flops_per_step)
from .targets import MFU_TARGET, ONLINE_TARGET, SCALING_TARGETS, TARGETS, evaluate_targets
from .workers import WORKERS

__all__ = ["CUDA_STEP_CONFIGS", "DEFAULT_VLLM_PYTHON", "MFU_TARGET", "ONLINE_TARGET", "PEAK_FLOPS", "RESULT_TAG",
           "SCALING_CONFIGS", "SCALING_TARGETS", "SECTIONS", "SHAPES", "STEP_CONFIGS", "TARGETS", "WORKERS",
           "PerfReport", "_merge_rounds", "build_model", "collate", "evaluate_targets", "machine_info",
           "model_flops_per_step", "random_examples", "render_markdown", "run_perf", "run_worker", "worker_main"]
