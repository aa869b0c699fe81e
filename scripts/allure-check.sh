#!/usr/bin/env bash
# Run a small set of suites with --alluredir, render the results with Allure 3 (the npm
# package: no Java), open the report in headless Chromium and check from the rendered DOM
# that every scenario test shows with its labels and attachments.
#
#   scripts/allure-check.sh                      # default suites below
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
if [ "$#" -eq 0 ]; then
    # One scenario with a verdict and the negative control: 1-2 minutes on 2 CPU cores.
    set -- suites/serving/test_reuse.py -k "test_high_reuse or test_low_reuse"
fi

for tool in npm "$CHROMIUM"; do
    command -v "$tool" >/dev/null || { echo "allure-check: $tool not found (bash scripts/install.sh --with-allure-check installs chromium and npm)" >&2; exit 2; }
done
"$PYTHON" -c "import allure_pytest" 2>/dev/null || { echo "allure-check: allure-pytest missing: .venv/bin/pip install allure-pytest" >&2; exit 2; }
if [ ! -x "$TOOLS/allure/node_modules/.bin/allure" ]; then
    mkdir -p "$TOOLS/allure"
    npm install --prefix "$TOOLS/allure" --no-audit --no-fund "allure@$ALLURE_VERSION" >/dev/null
fi

rm -rf "$WORK/results" "$WORK/report"
status=0
.venv/bin/pytest -p no:cacheprovider --alluredir="$WORK/results" "$@" || status=$?
# 0: all passed, 1: some tests failed: both render. Anything else is a broken run.
if [ "$status" -gt 1 ]; then
    echo "allure-check: pytest exited $status; nothing to render" >&2
    exit "$status"
fi
"$TOOLS/allure/node_modules/.bin/allure" generate "$WORK/results" -o "$WORK/report" >/dev/null

port=$("$PYTHON" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PYTHON" -m http.server --bind 127.0.0.1 --directory "$WORK/report" "$port" >"$WORK/http.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

"$PYTHON" - "$WORK" "$port" "$CHROMIUM" <<'PY'
"""Open each scenario test's page in headless Chromium; its DOM must show the labels and attachments."""
import html
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

work, port, chromium = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
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


results = [json.loads(p.read_text()) for p in (work / "results").glob("*-result.json")]
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
    wanted = [result["name"], *(f"scenario {s}" for s in scenarios), *attachments(result)]
    missing = [w for w in wanted if w not in text]
    if not any(a.endswith(" statistics") for a in attachments(result)):
        problems.append(f"{name}: no statistics attachment ({result['status']}): the scenario measured nothing")
    if missing:
        problems.append(f"{name}: the page at {base}#{rendered[name]} does not show {missing}")
    checked += 1
    print(f"allure-check: {result['name']} shows {len(wanted) - len(missing)}/{len(wanted)} "
          f"(labels {scenarios}, {len(attachments(result))} attachments)")

if not checked:
    problems.append(f"no scenario test ran (of {len(results)} results): were the serving suites skipped?")
for problem in problems:
    print(f"allure-check: FAIL {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
echo "allure-check: report OK at $WORK/report (pytest status $status)"
