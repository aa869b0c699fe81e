"""The timing definitions of the client, on a scripted stream and a fake clock: exact, not bounded.

test_client.py checks them against a real HTTP test double within a slack; here every timestamp is
chosen, so TTFT, ITL, E2E, TPOT and the send lag must come out exactly as the module docstring defines.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from pytest_mooncake.serving import client
from pytest_mooncake.serving.client import ClientConfig, RequestSpec, RunClock, StreamingClient, _content, _Stream, tpot


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    fake = Clock(1000.0)
    monkeypatch.setattr(client.time, "monotonic", fake.monotonic)
    yield fake


def _chunk(text: str | None = None, usage: dict[str, object] | None = None) -> str:
    body: dict[str, object] = {"choices": [{"text": text}] if text is not None else []}
    if usage is not None:
        body["usage"] = usage
    return "data: " + json.dumps(body)


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}


def _send(clock: Clock, monkeypatch: pytest.MonkeyPatch, script: list[tuple[float, str]], *,
          sent_at: float = 1000.0, scheduled: float | None = None, finished_at: float = 1009.0) -> client.RequestRecord:
    """``send`` with the stream replaced by ``script``: (clock time, SSE line) pairs."""

    async def stream(self: StreamingClient, spec: RequestSpec, s: _Stream, where: str) -> None:
        for at, line in script:
            clock.now = at
            s.feed(line)
        clock.now = finished_at

    monkeypatch.setattr(StreamingClient, "_stream", stream)
    clock.now = sent_at
    run_clock = RunClock(monotonic_s=990.0, epoch_s=5.0)
    spec = RequestSpec("r1", "s", "hit", prompt="p")
    return asyncio.run(StreamingClient(ClientConfig("http://127.0.0.1:1/v1", "m")).send(spec, run_clock, scheduled))


FULL = [(1000.5, _chunk("a")), (1000.75, _chunk("b")), (1001.25, _chunk("c")), (1001.5, _chunk(usage=USAGE)),
        (1001.6, "data: [DONE]")]


def test_every_latency_counts_from_the_start(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _send(clock, monkeypatch, FULL)
    assert record.error is None
    assert record.ttft_s == 0.5 and record.itl_s == (0.25, 0.5)
    assert record.e2e_s == 1.5, "E2E ends at the last chunk, the usage chunk included, not at [DONE]"
    assert record.tpot_s == (1.5 - 0.5) / 2
    assert (record.scheduled_at_s, record.sent_at_s, record.finished_at_s, record.send_lag_s) == (10.0, 10.0, 19.0, 0.0)
    assert (record.run_start_monotonic_s, record.run_start_epoch_s) == (990.0, 5.0)
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (7, 3, 2)
    assert (record.text, record.content_chunks) == ("abc", 3)


def test_an_open_loop_counts_from_the_scheduled_time(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sent 0.25 s after its scheduled arrival: the queueing is part of TTFT and E2E."""
    record = _send(clock, monkeypatch, FULL, scheduled=999.75)
    assert (record.scheduled_at_s, record.sent_at_s, record.send_lag_s) == (9.75, 10.0, 0.25)
    assert (record.ttft_s, record.e2e_s) == (0.75, 1.75)
    assert record.ttft_s - record.send_lag_s == 0.5, "vLLM's figure, from the actual send"


def test_a_schedule_in_the_future_counts_from_the_send(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _send(clock, monkeypatch, FULL, scheduled=1000.25)
    assert (record.scheduled_at_s, record.send_lag_s, record.ttft_s) == (10.0, 0.0, 0.5)


def test_chunks_without_content_do_not_start_ttft(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    script = [(1000.1, ": ping"), (1000.2, _chunk("")), (1000.3, _chunk()), (1000.5, _chunk("a")),
              (1000.6, "event: x"), (1000.9, _chunk("b")), (1001.0, _chunk(usage={**USAGE, "completion_tokens": 2})),
              (1001.4, "data: [DONE]")]
    record = _send(clock, monkeypatch, script)
    assert record.error is None and record.ttft_s == 0.5 and record.itl_s == (pytest.approx(0.4),)
    assert record.e2e_s == 1.0 and record.tpot_s == pytest.approx(0.5)


def test_a_failed_request_has_no_tpot_but_keeps_its_timings(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _send(clock, monkeypatch, FULL[:-1])  # no [DONE]: the stream was cut
    assert record.error is not None and record.error.kind == "stream_cut"
    assert (record.ttft_s, record.e2e_s, record.tpot_s) == (0.5, 1.5, None)


def test_a_stream_without_chunks_has_no_latencies(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _send(clock, monkeypatch, [(1000.5, "data: [DONE]")])
    assert (record.ttft_s, record.e2e_s, record.itl_s, record.content_chunks) == (None, None, (), 0)


def test_feed_takes_each_timestamp_as_the_line_arrives(clock: Clock) -> None:
    stream = _Stream("chat", "here")
    for at, line in [(1.0, 'data: {"choices": [{"delta": {"role": "assistant"}}]}'),
                     (2.0, 'data: {"choices": [{"delta": {"content": "x"}}]}'),
                     (3.5, 'data: {"choices": [{"delta": {"reasoning_content": "y"}}]}'),
                     (4.0, "data: [DONE]")]:
        clock.now = at
        stream.feed(line)
    assert (stream.first, stream.last_content, stream.last_chunk, stream.itl, stream.done) == (2.0, 3.5, 3.5, [1.5], True)


@pytest.mark.parametrize(
    ("api", "choice", "content"),
    [("completions", {"text": "t"}, "t"), ("completions", {"text": None}, ""), ("completions", {}, ""),
     ("chat", {"delta": {"content": "c"}}, "c"), ("chat", {"delta": {"reasoning_content": "r"}}, "r"),
     ("chat", {"delta": {"reasoning": "q"}}, "q"), ("chat", {"delta": {"role": "assistant"}}, ""),
     ("chat", {"delta": None}, ""), ("chat", {"text": "t"}, "")],
)
def test_what_counts_as_content(api: str, choice: dict[str, object], content: str) -> None:
    assert _content(api, choice) == content


@pytest.mark.parametrize(
    ("e2e", "ttft", "tokens", "expected"),
    [(1.5, 0.5, 3, 0.5), (1.5, 0.5, 2, 1.0), (1.5, 0.5, 1, None), (1.5, 0.5, 0, None), (1.5, 0.5, None, None),
     (None, 0.5, 3, None), (1.5, None, 3, None)],
)
def test_tpot_excludes_the_first_token(e2e: float | None, ttft: float | None, tokens: int | None, expected: float | None) -> None:
    assert tpot(e2e, ttft, tokens) == expected


def test_send_lag_is_actual_minus_scheduled_send() -> None:
    base = dict(request_id="r", scenario="s", round="r", api="completions", run_start_epoch_s=0.0, run_start_monotonic_s=0.0,
                finished_at_s=3.0, ttft_s=None, itl_s=(), tpot_s=None, e2e_s=None, prompt_tokens=None, completion_tokens=None,
                cached_tokens=None, content_chunks=0, text="", error=None)
    assert client.RequestRecord(scheduled_at_s=1.0, sent_at_s=1.25, **base).send_lag_s == 0.25  # type: ignore[arg-type]
    assert client.RequestRecord(scheduled_at_s=1.0, sent_at_s=None, **base).send_lag_s is None  # type: ignore[arg-type]


def test_feed_names_a_chunk_it_cannot_read(clock: Clock) -> None:
    stream = _Stream("completions", "here")
    stream.feed("data: {broken")
    assert stream.error == client.RequestError("bad_chunk", "unparsable SSE data line '{broken' [here]")
    stream = _Stream("completions", "here")
    stream.feed("data: [1, 2]")
    assert stream.error == client.RequestError("bad_chunk", "SSE data is not a JSON object: '[1, 2]' [here]")


def test_feed_reads_data_without_a_space_after_the_colon(clock: Clock) -> None:
    stream = _Stream("completions", "here")
    stream.feed('data:{"choices": [{"text": "a"}]}')
    assert stream.error is None and stream.text == ["a"]
