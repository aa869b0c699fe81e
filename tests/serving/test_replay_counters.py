"""qualify.replay against the test double: what it sent, in order, and how the server's counters grew."""

from __future__ import annotations

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.qualify.replay import replay, replay_prompts
from pytest_mooncake.qualify.traces import TraceRecord, schedule

from .fake_openai_server import FakeOpenAIServer

VOCAB = list(range(100, 8000))
SALT = [7] * 32


def test_replay_reports_the_prompts_sent_and_the_counters_grown() -> None:
    records = [TraceRecord(1, 0, 1024, 8, (1, 2)), TraceRecord(2, 200, 1536, 8, (1, 2, 3)),
               TraceRecord(3, 250, 512 * 40, 8, tuple(range(10, 50))),  # longer than the context: skipped
               TraceRecord(4, 400, 600, 8, (4, 5))]
    with FakeOpenAIServer(ttft=0.01, itl=0.001, tokens=2, cached=64) as server:
        endpoint = Endpoint(server.base_url, server.model, spawned=False, label="fake")
        result = replay(endpoint, records, VOCAB, SALT, max_model_len=2048, scale=4, speed=10.0, max_in_flight=1,
                        timeout=10.0)
    kept = [records[0], records[1], records[3]]
    assert result.skipped == 1 and not [r.error for r in result.records if r.error]
    assert result.prompts == replay_prompts(records, VOCAB, SALT, max_model_len=2048, scale=4)
    assert [len(p) for p in result.prompts] == [32 + 256, 32 + 384, 32 + 150]
    assert [r.prompt_tokens for r in result.records] == [len(p) for p in result.prompts]
    assert result.offsets_s == [offset for offset, _ in schedule(kept, speed=10.0)] == [0.0, 0.02, 0.04]
    assert result.local_hit_tokens == 3 * 64 and result.counters_settled
    # The double exports neither a connector's hits nor vllm:prompt_tokens: unknown, not zero.
    assert result.external_hit_tokens is None and result.counters["prompt_tokens"] is None
