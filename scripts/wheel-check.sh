#!/usr/bin/env bash
# Builds the wheel and checks it as a new user installs it, in fresh virtualenvs outside the
# checkout (so nothing is imported from the source tree):
#   base install:    an unrelated test passes, pytest --help lists the --mooncake-* options, and
#                    the benchmark prints what the plugin costs that unrelated run against the
#                    same run with -p no:mooncake (benchmarks/bench_plugin_overhead.py, 61 runs
#                    each), failing above 20 ms (benchmarks/results/plugin_overhead.md);
#   [mooncake,suites]: README's install line; the store suites run from the installed package
#                      against the embedded cluster (pytest --pyargs pytest_mooncake.suites.store)
#                      and none of them skips for a missing package.
# Usage: bash scripts/wheel-check.sh [PYTEST_ARGS...]   (extra arguments go to the store run)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/build-env"
"$work/build-env/bin/python" -m pip wheel -q --no-deps --wheel-dir "$work/dist" "$repo"
wheel=$(ls "$work"/dist/pytest_mooncake-*.whl)
echo "wheel-check: built $(basename "$wheel")"

mkdir "$work/project"
cat > "$work/project/test_unrelated.py" <<'PY'
def test_unrelated() -> None:
    assert sum([1, 2]) == 3
PY
cd "$work/project"

"$python" -m venv "$work/base"
"$work/base/bin/python" -m pip install -q "$wheel"
"$work/base/bin/pytest" -q -p no:cacheprovider test_unrelated.py
help=$("$work/base/bin/pytest" --help)
grep -q -- "--mooncake-master" <<<"$help" \
  || { echo "wheel-check: pytest --help of a base install lists no --mooncake-* option" >&2; exit 1; }
echo "wheel-check: base install OK"
"$work/base/bin/python" "$repo/benchmarks/bench_plugin_overhead.py" --runs 61 --max-ms 20

"$python" -m venv "$work/mooncake"
"$work/mooncake/bin/python" -m pip install -q "${wheel}[mooncake,suites]"
"$work/mooncake/bin/pytest" --pyargs pytest_mooncake.suites.store -p no:cacheprovider -rs \
  --mooncake-profile=cpu-ci "$@" | tee "$work/store.log"
if grep -E "^SKIPPED .*not installed" "$work/store.log"; then
  echo "wheel-check: [mooncake,suites] left the store suites above skipping for a missing package" >&2
  exit 1
fi
echo "wheel-check: [mooncake,suites] install ran the store suites from the installed package, 0 skipped for a missing package"
