"""Generation backends, registered by name (hf, vllm)."""
