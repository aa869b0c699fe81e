"""The client measures what the test double planted, and turns every fault into a recorded error."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pytest_mooncake.endpoints.server import DUMMY_MODEL, Endpoint
from pytest_mooncake.serving import ClientConfig, Concurrency, RequestSpec, run_requests, run_requests_async

from .fake_openai_server import FAULTS, FakeOpenAIServer

# Bounds on correctness, not performance: a busy 2-core CI machine may delay any read by a
# few hundred milliseconds, so upper bounds only catch gross errors (a wrong clock, a missed
# chunk). The exact checks use the double's own timestamps on the shared CLOCK_MONOTONIC.
SLACK_S = 0.5


def test_measures_planted_delays_on_completions_with_token_ids(fake_server: FakeOpenAIServer, config: ClientConfig) -> None:
    [record] = run_requests(config, [RequestSpec("r1", "s", "cold", prompt=list(range(7)), max_tokens=5)])
    assert record.ok, record.error
    sent = record.run_start_monotonic_s + record.sent_at_s
    served = fake_server.timings()["r1"]
    # The double waited the planted TTFT after the request arrived, and we read its first
    # token only after it wrote it: both are certain whatever the machine's load.
    assert sent <= served["received"] and served["first_write"] - served["received"] >= 0.1
    assert sent + record.ttft_s >= served["first_write"]
    assert 0.1 <= record.ttft_s <= 0.1 + SLACK_S
    assert len(record.itl_s) == 4 and all(gap >= 0 for gap in record.itl_s)
    assert sum(record.itl_s) <= 4 * 0.02 + SLACK_S
    assert record.tpot_s == pytest.approx((record.e2e_s - record.ttft_s) / 4)
    # The last token is written 4 planted gaps after the first: E2E cannot be shorter.
    assert record.e2e_s >= served["first_write"] - sent + 4 * 0.02
    assert record.ttft_s + sum(record.itl_s) <= record.e2e_s
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (7, 5, 3)
    assert record.text == " t0 t1 t2 t3 t4" and record.content_chunks == 5
    assert (record.scenario, record.round, record.api) == ("s", "cold", "completions")
    assert record.send_lag_s == 0.0  # closed loop: scheduled when sent
    assert json.loads(json.dumps(dataclasses.asdict(record)))["itl_s"] == list(record.itl_s)


def test_chat_role_only_chunk_does_not_count_as_first_token(config: ClientConfig) -> None:
    """The double sends a role-only chunk at once; counting it would give a TTFT near zero."""
    spec = RequestSpec("c1", messages=[{"role": "user", "content": "one two three"}], extra_body={"fake": {"ttft": 0.2}})
    [record] = run_requests(config, [spec])
    assert record.ok, record.error
    assert record.api == "chat" and record.prompt_tokens == 3
    assert 0.2 <= record.ttft_s <= 0.2 + SLACK_S


def test_long_token_id_prompt_costs_little_client_time(fake_server: FakeOpenAIServer, config: ClientConfig) -> None:
    # The SDK's per-item walk of typed arguments once put 1.5 s of client time into this TTFT.
    spec = RequestSpec("long", prompt=list(range(30_000)), extra_body={"fake": {"ttft": 0.0}})
    [record] = run_requests(config, [spec])
    assert record.ok and record.prompt_tokens == 30_000
    assert record.ttft_s < 1.0


EXPECTED_KINDS = {
    "http500": ("http_error", 500, "engine core died"),
    "not_streaming": ("not_streaming", 200, "text_completion"),
    "cut": ("stream_cut", None, "the stream broke after 2 content chunks"),
    "no_done": ("stream_cut", None, "[DONE]"),
    "empty": ("empty_completion", None, "0 completion tokens"),
    "error_event": ("server_error_event", None, "KV load failed"),
    "no_usage": ("missing_usage", None, "include_usage"),
    # Tokens but neither text nor token ids: from a real model, a broken server.
    "blank": ("no_content", None, "no chunk carried text or token ids"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_each_fault_becomes_its_recorded_error(config: ClientConfig, fault: str) -> None:
    [record] = run_requests(config, [RequestSpec(f"f-{fault}", prompt="a b", extra_body={"fake": {"fault": fault}})])
    kind, status, words = EXPECTED_KINDS[fault]
    assert record.error is not None and record.error.kind == kind
    assert record.error.status_code == status
    assert words in record.error.message and f"f-{fault}" in record.error.message
    assert record.tpot_s is None


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_token_ids_count_as_output_when_the_text_is_blank(config: ClientConfig, api: str) -> None:
    """A random-weight model's tokens may decode to nothing; the ids vLLM returns still time them."""
    fake = {"fault": "blank", "ttft": 0.1, "itl": 0.02, "tokens": 4}
    prompt = {"prompt": "a b"} if api == "completions" else {"messages": [{"role": "user", "content": "a b"}]}
    [record] = run_requests(config, [RequestSpec("ids", **prompt, extra_body={"fake": fake, "return_token_ids": True})])
    assert record.ok, record.error
    assert record.text == "" and record.token_ids == (100, 101, 102, 103) and record.content_chunks == 4
    assert 0.1 <= record.ttft_s <= 0.1 + SLACK_S and len(record.itl_s) == 3
    assert record.tpot_s == pytest.approx((record.e2e_s - record.ttft_s) / 3)


def test_token_ids_are_recorded_beside_the_text(config: ClientConfig) -> None:
    [plain, with_ids] = run_requests(config, [RequestSpec("plain", prompt="a"),
                                              RequestSpec("ids", prompt="a", extra_body={"return_token_ids": True})])
    assert plain.token_ids is None and plain.content_chunks == 5 and plain.decode_cached_tokens is None
    assert with_ids.text == plain.text == " t0 t1 t2 t3 t4" and with_ids.token_ids == (100, 101, 102, 103, 104)
    assert with_ids.content_chunks == 5


def test_a_pd_proxys_header_is_the_prefillers_reuse_and_usage_the_decoders(config: ClientConfig) -> None:
    [record] = run_requests(config, [RequestSpec("pd", prompt="a", extra_body={"fake": {"prefill_cached": 64}})])
    assert record.ok and (record.cached_tokens, record.decode_cached_tokens) == (64, 3)


def test_empty_completion_keeps_its_misleadingly_short_latency(config: ClientConfig) -> None:
    [record] = run_requests(config, [RequestSpec("e", prompt="a", extra_body={"fake": {"fault": "empty", "ttft": 0.01}})])
    assert record.error.kind == "empty_completion"
    assert record.completion_tokens == 0 and record.ttft_s is None and record.e2e_s < 1.0


def test_wrong_model_is_an_http_404_with_the_servers_message(fake_server: FakeOpenAIServer) -> None:
    config = ClientConfig(fake_server.base_url, "no-such-model", request_timeout_s=5)
    [record] = run_requests(config, [RequestSpec("m", prompt="a")])
    assert record.error.kind == "http_error" and record.error.status_code == 404
    assert "The model `no-such-model` does not exist." in record.error.message


def test_connection_refused_is_recorded() -> None:
    from .test_load import closed_port

    config = ClientConfig(f"http://127.0.0.1:{closed_port()}/v1", "fake", request_timeout_s=5)
    records = run_requests(config, [RequestSpec("x", prompt="a"), RequestSpec("y", prompt="b")], Concurrency(2))
    assert [r.error.kind for r in records] == ["connection_error", "connection_error"]
    assert "is the server running" in str(records[0].error)


def test_request_timeout_is_recorded(fake_server: FakeOpenAIServer) -> None:
    config = ClientConfig(fake_server.base_url, "fake", request_timeout_s=0.3)
    [record] = run_requests(config, [RequestSpec("slow", prompt="a", extra_body={"fake": {"ttft": 2.0}})])
    assert record.error.kind == "timeout" and "request_timeout_s" in record.error.message


@pytest.mark.asyncio
async def test_async_entry_point_in_a_running_loop(config: ClientConfig) -> None:
    records = await run_requests_async(config, [RequestSpec(str(i), prompt="a") for i in range(3)], Concurrency(3))
    assert [r.request_id for r in records] == ["0", "1", "2"] and all(r.ok for r in records)


def test_spec_needs_exactly_one_of_messages_and_prompt() -> None:
    with pytest.raises(ValueError, match="exactly one of messages"):
        RequestSpec("bad")
    with pytest.raises(ValueError, match="exactly one of messages"):
        RequestSpec("bad", messages=[], prompt="x")


def test_requests_to_a_random_weight_model_ask_for_token_ids() -> None:
    """Ours (spawned, or attached under our model's name) ask for ids and a first token; a real
    model's requests stay plain, so a blank answer from it remains a ``no_content`` error."""
    spec = RequestSpec("p", prompt="a", extra_body={"kv_transfer_params": {}})
    spawned = Endpoint("http://127.0.0.1:1/v1", "anything", spawned=True, label="spawned")
    attached_ours = Endpoint("http://127.0.0.1:1/v1", DUMMY_MODEL, spawned=False, label="ours")
    real = Endpoint("http://127.0.0.1:1/v1", "Qwen/Qwen2.5-7B", spawned=False, label="real")
    for endpoint in (spawned, attached_ours):
        prepared = endpoint.prepare(spec, 0.5)
        assert endpoint.dummy_weights and prepared.temperature == 0.5
        assert prepared.extra_body == {"kv_transfer_params": {}, "min_tokens": 1, "return_token_ids": True}
    assert not real.dummy_weights and real.prepare(spec, 0.0).extra_body == {"kv_transfer_params": {}}


def test_a_blank_random_weight_answer_passes_and_a_blank_real_one_fails() -> None:
    with FakeOpenAIServer(model=DUMMY_MODEL, ttft=0.0, itl=0.0, tokens=8) as server:
        ours = Endpoint(server.base_url, DUMMY_MODEL, spawned=False, label="ours")
        real = dataclasses.replace(ours, model=DUMMY_MODEL + "-real")
        blank = RequestSpec("b", prompt="a", extra_body={"fake": {"fault": "blank"}})
        [record] = run_requests(ours.client_config(5.0), [ours.prepare(blank, 0.0)])
        assert record.ok and record.token_ids == tuple(range(100, 108)), record.error
        [broken] = run_requests(ClientConfig(server.base_url, DUMMY_MODEL, request_timeout_s=5.0), [real.prepare(blank, 0.0)])
        assert broken.error is not None and broken.error.kind == "no_content"
