"""vLLM servers for the serving suites: a model directory we write, spawn/attach handles."""
