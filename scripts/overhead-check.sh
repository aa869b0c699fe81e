#!/usr/bin/env bash
# The plugin's cost to a pytest run that uses nothing of it, as a user pays it: the base wheel
# alone in a fresh virtualenv outside the checkout, timed against the same run with -p no:mooncake
# (benchmarks/bench_plugin_overhead.py). Fails when the overhead is above MAX_MS (default 20).
# Usage: bash scripts/overhead-check.sh [BENCHMARK_ARGS...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$repo"
wheel=$(ls "$work"/dist/pytest_mooncake-*.whl)
"$python" -m venv "$work/base"
"$work/base/bin/python" -m pip install -q "$wheel"
echo "overhead-check: base install of $(basename "$wheel")"
# 31 paired runs: a median that one slow run on a shared CI machine does not move.
"$work/base/bin/python" "$repo/benchmarks/bench_plugin_overhead.py" --runs 31 --max-ms "${MAX_MS:-20}" "$@"
