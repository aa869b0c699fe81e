#!/usr/bin/env bash
# Render Allure results with Allure 3 (the npm package: no Java) and its quality gates, open the
# report in headless Chromium and check from the rendered DOM that every scenario test shows
# its name, labels, statistics and charts, and that the Quality Gates tab shows every gate.
#
#   scripts/allure-check.sh --results DIR        # render and check results a run already wrote
#                                                # (.ci/run: the whole `pytest suites/` run)
#   scripts/allure-check.sh                      # run the default suites below, then check
#   scripts/allure-check.sh suites/serving -k ab # any pytest arguments instead
#
# Needs: .venv with allure-pytest (the report extra), npm and chromium: `bash scripts/install.sh
# --with-allure-check` installs them. Environment: ALLURE_CHECK_DIR (work directory, default a
# new temp dir), ALLURE_TOOLS_DIR (where npm installs allure, default ~/.cache/pytest-mooncake-ci),
# CHROMIUM (browser binary, default chromium), ALLURE_VERSION (npm range, default 3).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${ALLURE_CHECK_DIR:-$(mktemp -d /tmp/allure-check.XXXXXX)}
TOOLS=${ALLURE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pytest-mooncake-ci}
CHROMIUM=${CHROMIUM:-chromium}
ALLURE_VERSION=${ALLURE_VERSION:-3}  # npm version range of the allure package
PYTHON=.venv/bin/python
RESULTS=""
if [ "${1:-}" = "--results" ]; then
    RESULTS=${2:?"allure-check: --results needs the results directory a pytest --alluredir run wrote"}
    [ -d "$RESULTS" ] || { echo "allure-check: no results directory at $RESULTS (run pytest with --alluredir=$RESULTS first)" >&2; exit 2; }
    shift 2
elif [ "$#" -eq 0 ]; then
    # One scenario with a verdict and the negative control: 1-2 minutes on 2 CPU cores.
    set -- suites/serving/test_reuse.py -k "test_high_reuse or test_low_reuse"
fi

for tool in npm node "$CHROMIUM"; do
    command -v "$tool" >/dev/null || { echo "allure-check: $tool not found (bash scripts/install.sh --with-allure-check installs chromium and npm)" >&2; exit 2; }
done
"$PYTHON" -c "import allure_pytest" 2>/dev/null || { echo "allure-check: allure-pytest missing: .venv/bin/pip install allure-pytest" >&2; exit 2; }
if [ ! -x "$TOOLS/allure/node_modules/.bin/allure" ]; then
    mkdir -p "$TOOLS/allure"
    npm install --prefix "$TOOLS/allure" --no-audit --no-fund "allure@$ALLURE_VERSION" >/dev/null
fi

status=0
if [ -z "$RESULTS" ]; then
    RESULTS="$WORK/results"
    rm -rf "$RESULTS"
    .venv/bin/pytest -p no:cacheprovider --alluredir="$RESULTS" "$@" || status=$?
    ran_status=$status
    # 0: all passed, 1: some tests failed: both render. Anything else is a broken run.
    if [ "$status" -gt 1 ]; then
        echo "allure-check: pytest exited $status; nothing to render" >&2
        exit "$status"
    fi
fi
rm -rf "$WORK/report"
# Exit 3: a quality gate failed. The report shows which; the tests behind it failed in pytest already.
gates=0
node scripts/allure-render.mjs "$TOOLS/allure" "$RESULTS" "$WORK/report" || gates=$?
if [ "$gates" -ne 0 ] && [ "$gates" -ne 3 ]; then
    echo "allure-check: rendering $RESULTS failed (exit $gates)" >&2
    exit "$gates"
fi

port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$WORK/report" "$port" >"$WORK/http.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

"$PYTHON" - "$WORK" "$RESULTS" "$port" "$CHROMIUM" <<'PY'
"""Open each scenario test's page in headless Chromium; its DOM must show the labels, the statistics
and the charts. The Quality Gates tab must show every gate, each failed one as an error."""
import html
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

work, results_dir, port, chromium = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
base = f"http://127.0.0.1:{port}/"
for _ in range(50):  # the server needs a moment
    try:
        urllib.request.urlopen(base, timeout=1)
        break
    except OSError:
        time.sleep(0.1)
# As root Chromium needs --no-sandbox; the network flags keep it from calling home (refused
# on a closed CI network, and slow); each page gets a new, empty profile.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=15000", "--dump-dom"]


def page_text(url: str) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-profile.", dir=work,
                                     ignore_cleanup_errors=True) as profile:
        dom = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", url],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


def attachments(node: dict) -> list[str]:
    names = [a["name"] for a in node.get("attachments", [])]
    return names + [n for step in node.get("steps", []) for n in attachments(step)]


results = [json.loads(p.read_text()) for p in results_dir.glob("*-result.json")]
scenario_tests = [r for r in results if any(label["name"] == "scenario" for label in r.get("labels", []))]
rendered = {}
for path in (work / "report" / "data" / "test-results").glob("*.json"):
    data = json.loads(path.read_text())
    rendered[data.get("fullName") or data["name"]] = data["id"]

problems, checked = [], 0
for result in scenario_tests:
    name = result.get("fullName") or result["name"]
    if result["status"] == "skipped":
        continue
    if name not in rendered:
        problems.append(f"{name}: not in the rendered report")
        continue
    text = page_text(f"{base}#{rendered[name]}")
    scenarios = [label["value"] for label in result["labels"] if label["name"] == "scenario"]
    # Allure 3 lists a label's values together: "scenario high_reuse long_context_high_reuse".
    wanted = [result["name"], f"scenario {' '.join(scenarios)}", *attachments(result)]
    missing = [w for w in wanted if w not in text]
    statistics = [a for a in attachments(result) if a.endswith(" statistics")]
    if not statistics:
        problems.append(f"{name}: no statistics attachment ({result['status']}): the scenario measured nothing")
    if not any(a.endswith(".png") for a in attachments(result)):
        problems.append(f"{name}: statistics without charts")
    if missing:
        problems.append(f"{name}: the page at {base}#{rendered[name]} does not show {missing}")
    checked += 1
    print(f"allure-check: {result['name']} shows {len(wanted) - len(missing)}/{len(wanted)} "
          f"(labels {scenarios}, {len(attachments(result))} attachments)")

if not checked:
    problems.append(f"no scenario test ran (of {len(results)} results): were the serving suites skipped?")

gates = json.loads((work / "report" / "quality-gates.json").read_text())
if gates:
    text = page_text(f"{base}#/qualityGate")
    shown = [g for g in gates if g["rule"] in text]
    for gate in gates:
        if gate["rule"] not in text:
            problems.append(f"quality gate {gate['rule']} is not on the Quality Gates page {base}#/qualityGate")
    failed = [g["rule"] for g in gates if not g["success"]]
    if failed and "Error" not in text:
        problems.append(f"the Quality Gates page does not mark the failed gates {failed} as errors")
    print(f"allure-check: Quality Gates page shows {len(shown)}/{len(gates)} gates; failed: {', '.join(failed) or 'none'}")
for problem in problems:
    print(f"allure-check: FAIL {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "allure-check: report OK at $WORK/report (results $RESULTS, pytest status ${ran_status:-not run here}, quality gates $([ "$gates" -eq 0 ] && echo passed || echo FAILED))"
