"""Our streaming measurement against a known-delay test double: timings and every failure mode."""

from __future__ import annotations

import port_for
import pytest

from pytest_mooncake.measure import Concurrency, PoissonRate, run_round, sweep
from pytest_mooncake.scenarios import Prompt
from pytest_mooncake.vllm.server import Endpoint

from .fakes.fake_openai import Behaviour, FakeOpenAIServer

PROMPTS = [Prompt(f"p{i}", "cold", tuple(range(100)), 4) for i in range(3)]


def _measure(behaviour: Behaviour, model: str = "fake", **kwargs):  # type: ignore[no-untyped-def]
    with FakeOpenAIServer(behaviour) as server:
        records, _ = run_round(Endpoint(server.base_url, model, spawned=False, label="fake"), PROMPTS, **kwargs)
    return records


def test_ttft_itl_tpot_match_the_planted_delays() -> None:
    records = _measure(Behaviour(ttft=0.2, itl=0.05, tokens=4, cached=64))
    for record in records:
        assert record.error is None
        assert 0.2 <= record.ttft_s < 0.35
        assert all(0.04 <= gap < 0.15 for gap in record.itl_s) and len(record.itl_s) == 3
        assert record.tpot_s == pytest.approx((record.e2e_s - record.ttft_s) / 3)
        assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (100, 4, 64)


def test_concurrency_one_serialises_requests() -> None:
    with FakeOpenAIServer(Behaviour(ttft=0.2, itl=0.0, tokens=1)) as server:
        _, serial = run_round(Endpoint(server.base_url, "fake", spawned=False, label="f"), PROMPTS, mode=Concurrency(1))
        _, parallel = run_round(Endpoint(server.base_url, "fake", spawned=False, label="f"), PROMPTS, mode=Concurrency(None))
    assert serial >= 0.6 and parallel < 0.5


@pytest.mark.parametrize(
    ("behaviour", "model", "expected"),
    [
        (Behaviour(mode="http500"), "fake", "HTTP 500"),
        (Behaviour(), "no-such-model", "does not exist"),
        (Behaviour(mode="empty"), "fake", "empty_completion"),
        (Behaviour(mode="cut"), "fake", "stream_cut after 2 chunks"),
    ],
)
def test_failures_become_recorded_errors(behaviour: Behaviour, model: str, expected: str) -> None:
    records = _measure(behaviour, model)
    assert all(expected in (record.error or "") for record in records), [r.error for r in records]


def test_a_non_streaming_reply_is_an_error() -> None:
    records = _measure(Behaviour(mode="plain_json"))
    assert all(record.error for record in records)


def test_connection_refused_is_an_error() -> None:
    endpoint = Endpoint(f"http://127.0.0.1:{port_for.select_random()}/v1", "fake", spawned=False, label="down")
    records, _ = run_round(endpoint, PROMPTS, timeout=10)
    assert all("Connection" in (record.error or "") for record in records)


def test_timeout_is_an_error() -> None:
    records = _measure(Behaviour(ttft=2.0), timeout=0.5)
    assert all("TimeoutError" in (record.error or "") for record in records)


def test_open_loop_latency_includes_client_side_queueing() -> None:
    """Requests scheduled faster than one slot can serve them wait; that wait is latency."""
    prompts = [Prompt(f"p{i}", "open", (1, 2, 3), 1) for i in range(5)]
    with FakeOpenAIServer(Behaviour(ttft=0.2, itl=0.0, tokens=1)) as server:
        endpoint = Endpoint(server.base_url, "fake", spawned=False, label="f")
        records, _ = run_round(endpoint, prompts, mode=PoissonRate(rate=100.0, seed=1, max_in_flight=1))
    ttfts = [r.ttft_s for r in records]
    queued = [r.sent_at_s - r.scheduled_at_s for r in records]
    assert queued[0] < 0.05 and queued[-1] > 0.6, queued
    assert ttfts[-1] > 0.8 > ttfts[0], ttfts


def test_chat_api_and_sweep() -> None:
    chat = [Prompt(f"c{i}", "chat", (), 3, messages=({"role": "user", "content": "hi"},)) for i in range(2)]
    with FakeOpenAIServer(Behaviour(ttft=0.05, itl=0.01, tokens=3)) as server:
        endpoint = Endpoint(server.base_url, "fake", spawned=False, label="f")
        levels = sweep(endpoint, lambda label: chat, [Concurrency(1), Concurrency(2)])
    assert [mode for mode, _, _ in levels] == [Concurrency(1), Concurrency(2)]
    assert all(r.error is None and r.completion_tokens == 3 and r.text == "t0t1t2" for _, records, _ in levels for r in records)
