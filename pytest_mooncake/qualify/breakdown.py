"""Where a round's TTFT goes, as mean milliseconds per request.

The server's side comes from the deltas of vLLM's per-request histograms over the round
(``serving.counters.PHASES``), the client's from its own TTFTs:

- ``queue``: waiting to be scheduled (``vllm:request_queue_time_seconds``);
- ``prefill``: scheduled to first token (``vllm:request_prefill_time_seconds``): the compute of
  the uncached tail, and on a Mooncake store topology the KV lookup and load the connector does
  in the step, told apart as ``kv_load`` where it exports ``load_get`` timings;
- ``server_other``: the server's TTFT (``vllm:time_to_first_token_seconds``, from arrival) less
  the two: tokenization and the hand-over to the engine;
- ``client_hop``: the client's TTFT less the server's: HTTP, streaming, a proxy's forwarding.

The four add up to the client's mean TTFT. A round whose histograms counted other than the
requests it judges (a conversation's unjudged first turns, two instances serving each request
as prefill/decode does, another client) gets no breakdown but the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the report draws breakdowns without the serving extra's client
    from pytest_mooncake.serving import RequestRecord

PARTS = ("queue", "prefill", "server_other", "client_hop")
HEADING = "TTFT breakdown, mean per request: "  # the terminal's and the report's line


def _mean_ms(counters: Mapping[str, float], part: str, n: int) -> float:
    return 1000.0 * counters[f"{part}_sum"] / n


def ttft_breakdown(records: Sequence[RequestRecord], counters: Mapping[str, float]) -> dict[str, Any]:
    """The round's mean TTFT split into ``PARTS`` (plus ``kv_load`` within ``prefill``), or
    ``{"unavailable": reason}``."""
    ttfts = [r.ttft_s for r in records if r.ok and r.ttft_s is not None]
    if not ttfts:
        return {"unavailable": "no request of the round yielded a first token"}
    n = len(ttfts)
    missing = [p for p in ("server_ttft_s", "queue_s", "prefill_s") if counters.get(f"{p}_count") is None]
    if missing:
        return {"unavailable": f"the server exports no {', '.join(missing)} histograms (vLLM's request metrics)"}
    counted = {int(counters[f"{p}_count"]) for p in ("server_ttft_s", "queue_s", "prefill_s")}
    if counted != {n}:
        return {"unavailable": f"the server's histograms counted {'/'.join(map(str, sorted(counted)))} requests where the "
                               f"round judged {n}: requests it does not judge (a conversation's first turns), a "
                               "second instance or another client were counted too"}
    client = 1000.0 * sum(ttfts) / n
    server = _mean_ms(counters, "server_ttft_s", n)
    queue, prefill = _mean_ms(counters, "queue_s", n), _mean_ms(counters, "prefill_s", n)
    parts = {"queue": queue, "prefill": prefill, "server_other": server - queue - prefill, "client_hop": client - server}
    loads = counters.get("kv_load_s_count")
    return {"requests": n, "ttft_ms": client, **{f"{p}_ms": v for p, v in parts.items()},
            "kv_load_ms": _mean_ms(counters, "kv_load_s", n) if loads else None, "kv_loads": int(loads or 0)}


def describe(name: str, breakdown: Mapping[str, Any]) -> str:
    """One line: ``hit 120 ms = queue 2 + prefill 95 (KV load 40 in 8 loads) + server other 3 + client hop 20``."""
    if "unavailable" in breakdown:
        return f"{name}: no breakdown ({breakdown['unavailable']})"
    load = (f" (KV load {breakdown['kv_load_ms']:.0f} in {breakdown['kv_loads']} loads)"
            if breakdown["kv_load_ms"] is not None else "")
    return (f"{name} {breakdown['ttft_ms']:.0f} ms = queue {breakdown['queue_ms']:.0f} + prefill {breakdown['prefill_ms']:.0f}"
            f"{load} + server other {breakdown['server_other_ms']:.0f} + client hop {breakdown['client_hop_ms']:.0f}")
