"""Load modes: closed loop, open loop counted from the scheduled time, deadlines, sweeps."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from pytest_mooncake.serving import (
    ClientConfig,
    Concurrency,
    PoissonRate,
    RequestSpec,
    Timestamps,
    arrival_offsets,
    round_stats,
    run_requests,
    sweep,
)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def specs(count: int, tag: str = "r", **fake: float) -> list[RequestSpec]:
    return [RequestSpec(f"{tag}{i}", prompt="a b", max_tokens=2, extra_body={"fake": {"tokens": 2, **fake}})
            for i in range(count)]


def test_closed_loop_keeps_n_in_flight(config: ClientConfig) -> None:
    records = run_requests(config, specs(6, ttft=0.1, itl=0.0), Concurrency(3))
    assert all(r.ok for r in records) and all(r.send_lag_s == 0 for r in records)
    by_send = sorted(records, key=lambda r: r.sent_at_s)
    # Two waves of three: the third is sent before any of the first wave finishes, the fourth after.
    first_finish = min(r.finished_at_s for r in by_send[:3])
    assert by_send[2].sent_at_s < first_finish <= by_send[3].sent_at_s
    assert all(0.1 <= r.ttft_s < 0.1 + 0.5 for r in records)  # each counts from its own send


def test_open_loop_ttft_includes_queueing_behind_the_cap(config: ClientConfig) -> None:
    # 100 req/s against one slot and 0.1 s per request: request k waits about k * 0.1 s.
    records = run_requests(config, specs(5, ttft=0.1, itl=0.0), PoissonRate(100.0, seed=3, max_concurrency=1))
    assert all(r.ok for r in records)
    by_schedule = sorted(records, key=lambda r: r.scheduled_at_s)
    for k, record in enumerate(by_schedule):
        assert record.ttft_s >= 0.1 * (k + 1) - record.scheduled_at_s - 0.01
        # From the schedule: the queueing behind the cap plus the server's own 0.1 s to the first token.
        assert record.ttft_s >= record.send_lag_s + 0.1 - 0.01
        assert record.scheduled_at_s + record.ttft_s <= record.finished_at_s
    assert by_schedule[-1].ttft_s > 0.35 and by_schedule[-1].send_lag_s > 0.25
    # What vLLM's clock (from the actual send) would have shown instead: one request's own time.
    assert by_schedule[-1].ttft_s - by_schedule[-1].send_lag_s < 0.35


def test_open_loop_follows_the_seeded_schedule(config: ClientConfig) -> None:
    records = run_requests(config, specs(8, ttft=0.0, itl=0.0), PoissonRate(40.0, seed=7))
    planned = arrival_offsets(40.0, 8, 7)
    assert [r.scheduled_at_s for r in records] == pytest.approx(planned, abs=1e-9)
    # A busy CI machine delays our event loop now and then; only gross lateness is a bug here.
    lags = [r.send_lag_s for r in records]
    assert np.median(lags) < 0.05 and max(lags) < 0.5


def test_timestamps_replay_given_offsets(config: ClientConfig) -> None:
    records = run_requests(config, specs(3, "t", ttft=0.0, itl=0.0), Timestamps((0.0, 0.2, 0.4)))
    assert all(r.ok for r in records)
    assert [r.scheduled_at_s for r in records] == pytest.approx([0.0, 0.2, 0.4], abs=1e-9)
    assert all(r.sent_at_s >= r.scheduled_at_s for r in records)
    with pytest.raises(ValueError, match="2 send offsets for 3 requests"):
        run_requests(config, specs(3), Timestamps((0.0, 0.1)))
    with pytest.raises(ValueError, match="ascending"):
        Timestamps((0.5, 0.1))


def test_arrival_offsets_are_seeded_poisson() -> None:
    offsets = arrival_offsets(50.0, 4001, seed=1)
    assert offsets == arrival_offsets(50.0, 4001, seed=1) and offsets != arrival_offsets(50.0, 4001, seed=2)
    assert offsets[0] == 0.0 and np.all(np.diff(offsets) > 0)
    assert np.mean(np.diff(offsets)) == pytest.approx(1 / 50.0, rel=0.1)


def test_run_deadline_records_the_unfinished(config: ClientConfig) -> None:
    records = run_requests(config, specs(4, ttft=3.0), Concurrency(2), run_timeout_s=0.5)
    assert [r.error.kind for r in records] == ["run_timeout"] * 4
    assert "run_timeout_s" in records[0].error.message and records[3].sent_at_s is None


def test_sweep_runs_each_level_with_its_own_requests(config: ClientConfig) -> None:
    points = sweep(config, [Concurrency(1), Concurrency(2), PoissonRate(50.0)], lambda mode: specs(4, repr(mode), ttft=0.0))
    assert [p.mode for p in points] == [Concurrency(1), Concurrency(2), PoissonRate(50.0)]
    assert all(round_stats(p.records)["errors"] == 0 and len(p.records) == 4 for p in points)
    assert points[1].records[0].request_id.startswith("Concurrency(n=2)")


def test_invalid_modes_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="n must be at least 1"):
        Concurrency(0)
    with pytest.raises(ValueError, match="positive, finite"):
        PoissonRate(0.0)
