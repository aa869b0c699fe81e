"""How much does our client add to what it measures? (a benchmark, not a test)

Starts the known-delay test double (tests/fakes/fake_openai.py) in its own process with a
planted TTFT, then measures with pytest-mooncake's client:

1. TTFT measurement error (measured - planted) at p50/p99 with 256 concurrent streams;
2. the highest open-loop request rate it sustains: the largest Poisson rate at which the
   p99 lag between scheduled and actual send stays under 10 ms with no errors;

and runs aiperf against the same server with the same load, when aiperf is installed
(``--aiperf PATH``; it pins versions that clash with ours, so it lives in its own venv).
Writes benchmarks/results/client_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pytest_mooncake.measure import Concurrency, PoissonRate, run_round  # noqa: E402
from pytest_mooncake.scenarios import Prompt  # noqa: E402
from pytest_mooncake.vllm.model import write_model_dir  # noqa: E402
from pytest_mooncake.vllm.server import Endpoint  # noqa: E402

TTFT_S, ITL_S, TOKENS = 0.050, 0.010, 8
SERVER = """
import sys
from aiohttp import web
sys.path.insert(0, {repo!r})
from tests.fakes.fake_openai import Behaviour, make_app
web.run_app(make_app(Behaviour(ttft={ttft}, itl={itl}, tokens={tokens})), host="127.0.0.1", port={port}, print=None)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(port: int) -> subprocess.Popen[bytes]:
    code = SERVER.format(repo=str(REPO), ttft=TTFT_S, itl=ITL_S, tokens=TOKENS, port=port)
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the fake server did not start")


def _prompts(count: int, tag: str) -> list[Prompt]:
    return [Prompt(f"{tag}-{i}", tag, tuple(range(32)), TOKENS) for i in range(count)]


def ttft_error(endpoint: Endpoint, streams: int) -> dict[str, float]:
    # The first call pays the SDK's lazy imports; that is start-up, not measurement error.
    run_round(endpoint, _prompts(1, "warm"), mode=Concurrency(1))
    records, _ = run_round(endpoint, _prompts(streams, "err"), mode=Concurrency(streams))
    errors = np.array([r.ttft_s - TTFT_S for r in records if r.error is None]) * 1000
    return {"streams": streams, "ok": int(errors.size), "p50_ms": float(np.percentile(errors, 50)),
            "p99_ms": float(np.percentile(errors, 99)), "max_ms": float(errors.max())}


def sustained_rate(endpoint: Endpoint, rates: list[float], seconds: float) -> list[dict[str, float]]:
    rows = []
    for rate in rates:
        count = max(20, int(rate * seconds))
        records, wall = run_round(endpoint, _prompts(count, f"r{rate}"), mode=PoissonRate(rate, seed=1))
        lag = np.array([r.sent_at_s - r.scheduled_at_s for r in records]) * 1000
        ttft = np.array([r.ttft_s for r in records if r.ttft_s is not None]) * 1000
        rows.append({"rate": rate, "requests": count, "errors": sum(r.error is not None for r in records),
                     "achieved": count / wall, "lag_p99_ms": float(np.percentile(lag, 99)),
                     "ttft_p99_ms": float(np.percentile(ttft, 99)) if ttft.size else float("nan")})
    return rows


def run_aiperf(aiperf: Path, port: int, streams: int, workdir: Path) -> dict[str, object]:
    # No hub here: aiperf gets the tokenizer of the model directory our vLLM fixture writes.
    tokenizer = write_model_dir(workdir / "tokenizer")
    command = [str(aiperf), "profile", "--model", "fake", "--url", f"http://127.0.0.1:{port}",
               "--endpoint-type", "completions", "--streaming", "--concurrency", str(streams),
               "--request-count", str(streams), "--output-tokens-mean", str(TOKENS),
               "--tokenizer", str(tokenizer), "--output-artifact-dir", str(workdir)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    result: dict[str, object] = {"command": " ".join(command), "exit": done.returncode, "wall_s": time.monotonic() - started}
    export = workdir / "profile_export_aiperf.json"
    if export.exists():
        data = json.loads(export.read_text())
        ttft = data["time_to_first_token"]
        result["ttft_error_ms"] = {k: ttft[k] - TTFT_S * 1000 for k in ("p50", "p99")}
        result["request_throughput"] = data["request_throughput"]["avg"]
    else:
        result["output_tail"] = (done.stdout + done.stderr)[-1500:]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--rates", default="50,100,200,400")
    parser.add_argument("--seconds", type=float, default=5.0, help="requests per rate = rate x seconds")
    parser.add_argument("--aiperf", type=Path, default=None, help="path of an aiperf executable (own venv)")
    args = parser.parse_args()
    port = _free_port()
    server = _start_server(port)
    try:
        endpoint = Endpoint(f"http://127.0.0.1:{port}/v1", "fake", spawned=False, label="known-delay")
        error = ttft_error(endpoint, args.streams)
        rates = sustained_rate(endpoint, [float(r) for r in args.rates.split(",")], args.seconds)
        aiperf = run_aiperf(args.aiperf, port, args.streams, REPO / "benchmarks" / "results" / "aiperf") if args.aiperf else None
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)
    sustained = max((row["rate"] for row in rates if row["errors"] == 0 and row["lag_p99_ms"] < 10), default=0.0)
    lines = [
        "# Client overhead against a known-delay server",
        "",
        f"Host: {os.cpu_count()} CPUs; server: tests/fakes/fake_openai.py in its own process, "
        f"planted TTFT {TTFT_S * 1000:.0f} ms, ITL {ITL_S * 1000:.0f} ms, {TOKENS} tokens.",
        "",
        f"TTFT measurement error with {error['streams']} concurrent streams: p50 {error['p50_ms']:.2f} ms, "
        f"p99 {error['p99_ms']:.2f} ms, max {error['max_ms']:.2f} ms (the server's own scheduling is included).",
        "",
        "| Poisson rate (req/s) | requests | errors | achieved (req/s) | send lag p99 (ms) | TTFT p99 (ms) |",
        "|---|---|---|---|---|---|",
        *[f"| {r['rate']:g} | {r['requests']} | {r['errors']} | {r['achieved']:.1f} | {r['lag_p99_ms']:.2f} | {r['ttft_p99_ms']:.1f} |" for r in rates],
        "",
        f"Highest rate sustained (no errors, send lag p99 < 10 ms): {sustained:g} req/s.",
        "",
        "aiperf on the same server: " + (json.dumps(aiperf, indent=2) if aiperf else "not run (pass --aiperf PATH)"),
    ]
    out = REPO / "benchmarks" / "results" / "client_overhead.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
