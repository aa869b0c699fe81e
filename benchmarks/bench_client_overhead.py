"""How much does our client add to what it measures, beside aiperf? (a benchmark script, not a test)

Starts the known-delay test double (tests/serving/fake_openai_server.py) in its own process with
a planted TTFT, then, with ``pytest_mooncake.serving``:

1. TTFT measurement error (measured - planted) at p50/p99 with 256 concurrent streams, split with
   the double's own timestamps (shared CLOCK_MONOTONIC) into what the client added (send to
   arrival, first write to first read) and what the double added (its own lateness);
2. the highest sustained open-loop rate: the largest Poisson rate with no errors, an achieved rate
   of at least 90% of the target, and a TTFT error at p99 within 10 ms (ours counts from the
   *scheduled* time, so our own send lag is inside that figure).

The error test also runs through the ``openai`` SDK (its httpx and its aiohttp transports), the
route this client took before it spoke the HTTP API itself, when the SDK is installed. Then runs
aiperf (``--aiperf PATH``, default: ``aiperf`` on PATH or beside this interpreter) on the same
server with the same loads and prints all side by side. Writes
benchmarks/results/client_overhead.md (with the raw numbers as JSON at the end).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import pytest_mooncake.serving.load as load  # noqa: E402
from pytest_mooncake.serving import (  # noqa: E402
    ClientConfig,
    Concurrency,
    PoissonRate,
    RequestSpec,
    StreamingClient,
    round_stats,
    run_requests,
)

TTFT_S, ITL_S, TOKENS = 0.050, 0.010, 8
SUSTAINED_LAG_MS, SUSTAINED_FRACTION = 10.0, 0.9


def start_server() -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, str(REPO / "tests/serving/fake_openai_server.py"), "--port", "0", "--ttft", str(TTFT_S),
               "--itl", str(ITL_S), "--tokens", str(TOKENS), "--uvloop"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # the double prints READY <port> once it listens
    if not line.startswith("READY"):
        process.kill()
        raise RuntimeError(f"the known-delay server did not start: {command} printed {line!r}")
    return process, int(line.split()[1])


def specs(count: int, tag: str) -> list[RequestSpec]:
    return [RequestSpec(f"{tag}-{i}", prompt=list(range(32)), max_tokens=TOKENS) for i in range(count)]


def pct(values: list[float] | np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def ttft_error(config: ClientConfig, port: int, streams: int, waves: int, tag: str = "ours") -> dict[str, Any]:
    run_requests(config, specs(streams, f"{tag}-warm"), Concurrency(streams))  # start-up costs are not measurement error
    records = run_requests(config, specs(streams * waves, f"{tag}-err"), Concurrency(streams))
    ok = [r for r in records if r.ok]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/debug/timings", timeout=30) as reply:
        server = json.load(reply)
    error_ms = [(r.ttft_s - TTFT_S) * 1000 for r in ok]
    client_ms, server_ms = [], []
    for r in ok:
        t = server[r.request_id]
        sent = r.run_start_monotonic_s + r.sent_at_s
        first_read = r.run_start_monotonic_s + r.scheduled_at_s + r.ttft_s
        client_ms.append(((t["received"] - sent) + (first_read - t["first_write"])) * 1000)
        server_ms.append((t["first_write"] - t["received"] - TTFT_S) * 1000)
    steady = error_ms[streams:]  # after the first wave, which opens the connections
    return {"streams": streams, "requests": len(records), "ok": len(ok),
            "error_p50_ms": pct(error_ms, 50), "error_p99_ms": pct(error_ms, 99), "error_max_ms": max(error_ms),
            "steady_error_p50_ms": pct(steady, 50), "steady_error_p99_ms": pct(steady, 99),
            "client_part_p50_ms": pct(client_ms, 50), "client_part_p99_ms": pct(client_ms, 99),
            "server_part_p50_ms": pct(server_ms, 50), "server_part_p99_ms": pct(server_ms, 99)}


def sdk_client(transport: str) -> type[StreamingClient]:
    """A StreamingClient whose requests go through the openai SDK (for comparison only)."""
    import openai

    class SDKClient(StreamingClient):
        async def __aenter__(self) -> SDKClient:
            http = openai.DefaultAioHttpClient if transport == "aiohttp" else openai.DefaultAsyncHttpxClient
            self._sdk = openai.AsyncOpenAI(base_url=self.config.base_url, api_key=self.config.api_key, max_retries=0,
                                           http_client=http(timeout=self.config.request_timeout_s))
            return self

        async def __aexit__(self, *exc: object) -> None:
            await self._sdk.close()

        async def _stream(self, spec: RequestSpec, stream: Any, where: str) -> None:
            request = self._sdk.completions.with_streaming_response.create(
                model=self.config.model, prompt=list(spec.prompt), max_tokens=spec.max_tokens, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True}, extra_headers={"X-Request-Id": spec.request_id})
            async with request as response:
                async for line in response.http_response.aiter_lines():
                    stream.feed(line)

    return SDKClient


def sdk_errors(config: ClientConfig, port: int, streams: int, waves: int) -> dict[str, Any]:
    try:
        import openai  # noqa: F401
    except ImportError:
        return {}
    results = {}
    for transport in ("httpx", "aiohttp"):
        with mock.patch.object(load, "StreamingClient", sdk_client(transport)):
            try:
                results[transport] = ttft_error(config, port, streams, waves, tag=f"sdk-{transport}")
            except RuntimeError as exc:  # the SDK's aiohttp transport needs its extra installed
                results[transport] = {"failed": str(exc)}
    return results


def rate_row(rate: float, achieved: float, errors: int, ttft_p99_ms: float, extra: dict[str, Any]) -> dict[str, Any]:
    sustained = errors == 0 and achieved >= SUSTAINED_FRACTION * rate and ttft_p99_ms - TTFT_S * 1000 <= SUSTAINED_LAG_MS
    return {"rate": rate, "achieved": achieved, "errors": errors, "ttft_p99_ms": ttft_p99_ms, "sustained": sustained, **extra}


def our_rates(config: ClientConfig, rates: list[float], seconds: float) -> list[dict[str, Any]]:
    rows = []
    for rate in rates:
        records = run_requests(config, specs(max(50, int(rate * seconds)), f"rate{rate:g}"), PoissonRate(rate, seed=1))
        stats = round_stats(records)
        lags = [r.send_lag_s * 1000 for r in records if r.send_lag_s is not None]
        rows.append(rate_row(rate, stats["requests_per_s"], stats["errors"],
                             stats["ttft_ms"]["p99"] if stats["ttft_ms"] else float("nan"),
                             {"send_lag_p99_ms": pct(lags, 99), "requests": len(records)}))
    return rows


def find_aiperf(given: str | None) -> str | None:
    if given:
        return given
    beside = Path(sys.executable).with_name("aiperf")
    return str(beside) if beside.exists() else shutil.which("aiperf")


def aiperf_run(aiperf: str, port: int, workdir: Path, load: list[str], count: int) -> dict[str, Any]:
    # No model hub here: aiperf counts tokens with the tokenizer our vLLM fixture trains locally.
    from pytest_mooncake.endpoints.model import write_model_dir

    tokenizer = write_model_dir(REPO / "benchmarks/results/aiperf/tokenizer")
    command = [aiperf, "profile", "--model", "fake", "--url", f"http://127.0.0.1:{port}", "--endpoint-type",
               "completions", "--streaming", "--tokenizer", str(tokenizer), "--isl", "32", "--osl", str(TOKENS),
               "--request-count", str(count), "--output-artifact-dir", str(workdir), "--random-seed", "1", *load]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"command": " ".join(command), "failed": f"{type(exc).__name__}: {exc}"}
    result: dict[str, Any] = {"command": " ".join(command), "exit": done.returncode, "wall_s": time.monotonic() - started}
    export = workdir / "profile_export_aiperf.json"
    if done.returncode != 0 or not export.exists():
        result["failed"] = (done.stdout + done.stderr)[-2000:]
        return result
    data = json.loads(export.read_text())
    ttft = data["time_to_first_token"]
    result.update(error_p50_ms=ttft["p50"] - TTFT_S * 1000, error_p99_ms=ttft["p99"] - TTFT_S * 1000,
                  ttft_p99_ms=ttft["p99"], achieved=data["request_throughput"]["avg"],
                  errors=int(data.get("error_request_count", {}).get("avg", 0) or 0))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--waves", type=int, default=4, help="requests in the error test = streams x waves")
    parser.add_argument("--rates", default="50,100,200,400,800")
    parser.add_argument("--seconds", type=float, default=5.0, help="requests per rate = rate x seconds")
    parser.add_argument("--aiperf", default=None, help="path of an aiperf executable")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    server, port = start_server()
    aiperf = find_aiperf(args.aiperf)
    ours_rates: list[dict[str, Any]] = []
    theirs: dict[str, Any] = {"available": aiperf is not None}
    try:
        config = ClientConfig(f"http://127.0.0.1:{port}/v1", "fake", request_timeout_s=60, max_connections=max(1024, args.streams))
        ours_error = ttft_error(config, port, args.streams, args.waves)
        sdk = sdk_errors(config, port, args.streams, args.waves)
        ours_rates = our_rates(config, rates, args.seconds)
        if aiperf:
            work = REPO / "benchmarks/results/aiperf"
            theirs["error"] = aiperf_run(aiperf, port, work / "concurrency", [
                "--concurrency", str(args.streams), "--warmup-request-count", str(args.streams)], args.streams * args.waves)
            theirs["rates"] = []
            for rate in rates:
                run = aiperf_run(aiperf, port, work / f"rate{rate:g}", ["--request-rate", str(rate),
                                 "--request-rate-mode", "poisson"], max(50, int(rate * args.seconds)))
                if "failed" not in run:
                    run.update(rate_row(rate, run["achieved"], run["errors"], run["ttft_p99_ms"], {}))
                theirs["rates"].append({"rate": rate, **run})
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)
    write_report(ours_error, sdk, ours_rates, theirs, args)
    return 0


def fmt(value: Any, spec: str = ".2f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "n/a"


def write_report(error: dict[str, Any], sdk: dict[str, Any], rates: list[dict[str, Any]], theirs: dict[str, Any], args: argparse.Namespace) -> None:
    aip_error = theirs.get("error", {})
    best = max((r["rate"] for r in rates if r["sustained"]), default=0.0)
    aip_rates = {r["rate"]: r for r in theirs.get("rates", [])}
    aip_best = max((r["rate"] for r in aip_rates.values() if r.get("sustained")), default=0.0)
    lines = [
        "# Client overhead against a known-delay server: pytest-mooncake vs aiperf",
        "",
        f"Host: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}. Server: tests/serving/fake_openai_server.py "
        f"(uvloop) in its own process, planted TTFT {TTFT_S * 1000:.0f} ms, ITL {ITL_S * 1000:.0f} ms, {TOKENS} tokens; "
        "client and server share the machine, so each takes CPU from the other.",
        "",
        f"## TTFT measurement error, {args.streams} concurrent streams, {error['requests']} requests (closed loop)",
        "",
        "| | p50 (ms) | p99 (ms) |",
        "|---|---|---|",
        f"| pytest-mooncake, all requests | {fmt(error['error_p50_ms'])} | {fmt(error['error_p99_ms'])} |",
        f"| pytest-mooncake, after the first wave | {fmt(error['steady_error_p50_ms'])} | {fmt(error['steady_error_p99_ms'])} |",
        f"| of which the client (send→arrival + write→read) | {fmt(error['client_part_p50_ms'])} | {fmt(error['client_part_p99_ms'])} |",
        f"| of which the server's own lateness | {fmt(error['server_part_p50_ms'])} | {fmt(error['server_part_p99_ms'])} |",
        *(f"| the same through the openai SDK ({name} transport), after the first wave | "
          f"{fmt(e.get('steady_error_p50_ms'))} | {fmt(e.get('steady_error_p99_ms'))} |" for name, e in sdk.items()),
        f"| aiperf (after {args.streams} warm-up requests) | {fmt(aip_error.get('error_p50_ms'))} | {fmt(aip_error.get('error_p99_ms'))} |",
        "",
        f"## Open-loop Poisson rates ({args.seconds:g} s of requests per rate)",
        "",
        f"Sustained = no errors, achieved >= {SUSTAINED_FRACTION:.0%} of the target, TTFT p99 - planted <= "
        f"{SUSTAINED_LAG_MS:g} ms. Our TTFT counts from the scheduled time, aiperf's from its actual send.",
        "",
        "| rate (req/s) | ours: achieved | ours: TTFT p99 (ms) | ours: send lag p99 (ms) | ours: sustained "
        "| aiperf: achieved | aiperf: TTFT p99 (ms) | aiperf: sustained |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rates:
        a = aip_rates.get(row["rate"], {})
        lines.append(f"| {row['rate']:g} | {fmt(row['achieved'], '.1f')} | {fmt(row['ttft_p99_ms'], '.1f')} | "
                     f"{fmt(row['send_lag_p99_ms'])} | {row['sustained']} | {fmt(a.get('achieved'), '.1f')} | "
                     f"{fmt(a.get('ttft_p99_ms'), '.1f')} | {a.get('sustained', 'n/a')} |")
    lines += [
        "",
        f"Highest sustained rate: pytest-mooncake {best:g} req/s; aiperf "
        f"{fmt(aip_best, 'g') if theirs.get('available') else 'not run (no aiperf executable found)'} req/s.",
        "",
        "## Raw numbers",
        "",
        "```json",
        json.dumps({"ours": {"ttft_error": error, "rates": rates}, "openai_sdk": sdk, "aiperf": theirs}, indent=2, default=str),
        "```",
    ]
    out = REPO / "benchmarks/results/client_overhead.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[: lines.index("## Raw numbers")]))


if __name__ == "__main__":
    sys.exit(main())
