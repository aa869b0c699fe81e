"""Trace-driven simulation of KV-cache scheduling over N prefill nodes (seed 004, rebuilt).

Model
-----
- Each prefill node keeps a local KV cache of ``capacity_blocks`` blocks with LRU or LFU
  eviction. An optional global Mooncake pool (LRU, ``pool_blocks``) holds every block any
  node computed and answers what the local cache misses; its hits are counted apart.
- A request reuses the *leading* blocks found locally, then the following ones found in the
  pool; the first block found in neither ends reuse, since a block's KV depends on every
  token before it. The remaining tokens are prefilled.
- Nodes really get busy (the seed's load queue never changed, which disabled load balancing):
  each node serves its requests in arrival order, a request occupies it for the prefill time
  of the tokens it computes, ``prefill_flops(n) - prefill_flops(cached)`` of the Mooncake
  design at the node's FLOP/s, and a node's *load* is its outstanding work (seconds) when a
  request arrives. Loading reused KV is taken as free (Mooncake overlaps it layer by layer).

Strategies
----------
``random`` (seeded); ``least_loaded``; ``cache_aware``: the node with the longest cached
prefix, ties to the least loaded; ``prefix_aware``: ``cache_aware`` plus hotspot replication.
Ties in load go to the node that has served fewer requests, then the lower index.

Hotspot intensity of a block is the share of the last ``hotspot_window`` requests (this one
included) whose prompt contains it, made non-increasing along the prompt so that what is
replicated is always a prefix. After serving a request, its leading blocks of intensity
>= 0.5 / 0.2 / 0.1 are copied to the 3 / 2 / 1 least-loaded other nodes (the seed's factors;
the copies are extra replicas besides the home node). Copying costs storage, not GPU time.

Tiers of one vLLM
-----------------
``--tiers`` predicts instead what one vLLM serves from each tier for the trace's requests sent
in order, one at a time: its local prefix cache (``--capacity-blocks``) first, the Mooncake
pool (``--pool-blocks``, or ``--pool-bytes`` in blocks of ``--model``'s KV) for the blocks
after, in tokens as vLLM counts them (``pytest_mooncake.tools.tiers``). The trace replay
suite saves the sequence it sent as such a trace and prints the command that predicts it.

Cost score
----------
The seed weighs GPU time against storage at ``cost_ratio`` : 1 (150:1, "a 1-point hit-ratio
gain is worth more than 100% data redundancy"). Here ``cost_score = cost_ratio x hit ratio
in percentage points - redundancy in percent``, redundancy being the blocks copied by
replication over the trace's distinct blocks. Only differences between strategies mean
anything; the table shows each one against the first strategy listed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import sys
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from pytest_mooncake.config.parsing import parse_size
from pytest_mooncake.errors import USAGE_ERROR, install_extra
from pytest_mooncake.qualify.capacity import GPUS, MODELS, Gpu, ModelShape, gpu_spec, recompute_seconds
from pytest_mooncake.qualify.traces import BLOCK_TOKENS, TraceFormatError, TraceRecord, leading_hits, load_trace

STRATEGIES = ("random", "least_loaded", "cache_aware", "prefix_aware")
EVICTIONS = ("lru", "lfu")
REPLICA_TIERS = ((0.5, 3), (0.2, 2), (0.1, 1))  # (hotspot intensity at least, extra replicas), seed 004


class BlockCache(Protocol):
    def __contains__(self, block: object) -> bool: ...

    def __len__(self) -> int: ...

    def touch(self, block: int) -> bool:
        """Insert or refresh ``block``; True when it was not cached before."""


class LruCache:
    """At most ``capacity`` blocks (None: unbounded); evicts the least recently touched."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def __contains__(self, block: object) -> bool:
        return block in self._blocks

    def __len__(self) -> int:
        return len(self._blocks)

    def touch(self, block: int) -> bool:
        if block in self._blocks:
            self._blocks.move_to_end(block)
            return False
        if self.capacity == 0:
            return False
        self._blocks[block] = None
        if self.capacity is not None and len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return True


class LfuCache:
    """At most ``capacity`` blocks (None: unbounded); evicts the least often touched, oldest first on ties."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self._count: dict[int, int] = {}
        self._by_count: dict[int, OrderedDict[int, None]] = {}
        self._min_count = 0

    def __contains__(self, block: object) -> bool:
        return block in self._count

    def __len__(self) -> int:
        return len(self._count)

    def touch(self, block: int) -> bool:
        count = self._count.get(block)
        if count is not None:
            self._move(block, count)
            return False
        if self.capacity == 0:
            return False
        if self.capacity is not None and len(self._count) >= self.capacity:
            self._evict()
        self._count[block] = 1
        self._by_count.setdefault(1, OrderedDict())[block] = None
        self._min_count = 1
        return True

    def _move(self, block: int, count: int) -> None:
        bucket = self._by_count[count]
        del bucket[block]
        if not bucket:
            del self._by_count[count]
            if self._min_count == count:
                self._min_count = count + 1
        self._count[block] = count + 1
        self._by_count.setdefault(count + 1, OrderedDict())[block] = None

    def _evict(self) -> None:
        bucket = self._by_count[self._min_count]
        victim, _ = bucket.popitem(last=False)
        if not bucket:
            del self._by_count[self._min_count]
        del self._count[victim]


def _new_cache(capacity: int | None, eviction: str) -> BlockCache:
    return LfuCache(capacity) if eviction == "lfu" else LruCache(capacity)


def touch_all(cache: BlockCache, blocks: Sequence[int]) -> int:
    # Tail first, so a prompt's head is its most recently used block and LRU evicts tails
    # before the prefixes they depend on (vLLM frees blocks in the same order).
    return sum(cache.touch(block) for block in reversed(blocks))


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 4
    capacity_blocks: int | None = None
    eviction: str = "lru"
    pool_blocks: int | None = 0
    cost_ratio: float = 150.0
    hotspot_window: int = 100
    block_size: int = BLOCK_TOKENS
    model: ModelShape = MODELS["llama3-70b"]
    gpu: Gpu = GPUS["A800"]
    gpus_per_node: int = 8
    seed: int = 0

    def check(self) -> None:
        problems = [
            f"nodes must be >= 1, got {self.nodes}" if self.nodes < 1 else "",
            f"capacity_blocks must be >= 0 or None (unbounded), got {self.capacity_blocks}"
            if self.capacity_blocks is not None and self.capacity_blocks < 0 else "",
            f"pool_blocks must be >= 0 (0: no pool) or None (unbounded), got {self.pool_blocks}"
            if self.pool_blocks is not None and self.pool_blocks < 0 else "",
            f"eviction must be one of {', '.join(EVICTIONS)}, got {self.eviction!r}" if self.eviction not in EVICTIONS else "",
            f"hotspot_window must be >= 1, got {self.hotspot_window}" if self.hotspot_window < 1 else "",
        ]
        if any(problems):
            raise ValueError("; ".join(p for p in problems if p))


@dataclass(frozen=True)
class SimResult:
    strategy: str
    requests: int
    blocks: int
    distinct_blocks: int
    local_hit_blocks: int
    pool_hit_blocks: int
    replicated_blocks: int
    node_requests: tuple[int, ...]
    node_work_s: tuple[float, ...]  # prefill seconds each node spent
    mean_wait_s: float  # queueing before a request's prefill starts
    p99_wait_s: float
    cost_ratio: float

    @property
    def local_hit_ratio(self) -> float:
        return self.local_hit_blocks / self.blocks if self.blocks else 0.0

    @property
    def pool_hit_ratio(self) -> float:
        return self.pool_hit_blocks / self.blocks if self.blocks else 0.0

    @property
    def hit_ratio(self) -> float:
        return (self.local_hit_blocks + self.pool_hit_blocks) / self.blocks if self.blocks else 0.0

    @property
    def max_request_share(self) -> float:
        """The busiest node's share of requests (the seed's "load concentration"; 1/N is even)."""
        return max(self.node_requests) / self.requests if self.requests else 0.0

    @property
    def work_max_over_mean(self) -> float:
        mean = sum(self.node_work_s) / len(self.node_work_s)
        return max(self.node_work_s) / mean if mean else 0.0

    @property
    def work_cv(self) -> float:
        """Coefficient of variation of prefill work across nodes (0: perfectly even)."""
        mean = sum(self.node_work_s) / len(self.node_work_s)
        if not mean:
            return 0.0
        return math.sqrt(sum((w - mean) ** 2 for w in self.node_work_s) / len(self.node_work_s)) / mean

    @property
    def redundancy(self) -> float:
        return self.replicated_blocks / self.distinct_blocks if self.distinct_blocks else 0.0

    @property
    def cost_score(self) -> float:
        return self.cost_ratio * 100 * self.hit_ratio - 100 * self.redundancy

    def to_dict(self) -> dict[str, object]:
        derived = ("local_hit_ratio", "pool_hit_ratio", "hit_ratio", "max_request_share", "work_max_over_mean",
                   "work_cv", "redundancy", "cost_score")
        return asdict(self) | {name: getattr(self, name) for name in derived}


class _Node:
    def __init__(self, index: int, cache: BlockCache) -> None:
        self.index, self.cache = index, cache
        self.busy_until = 0.0
        self.requests = 0
        self.work_s = 0.0

    def rank(self, now: float) -> tuple[float, int, int]:
        """Sort key: least outstanding work at ``now``, then fewest requests served, then index."""
        return max(0.0, self.busy_until - now), self.requests, self.index


class _Hotspots:
    """Block access counts over the last ``window`` requests."""

    def __init__(self, window: int) -> None:
        self._recent: deque[Sequence[int]] = deque(maxlen=window)
        self._counts: Counter[int] = Counter()

    def add(self, blocks: Sequence[int]) -> None:
        if len(self._recent) == self._recent.maxlen:
            self._counts.subtract(self._recent[0])
        self._recent.append(blocks)
        self._counts.update(blocks)

    def replicas(self, blocks: Sequence[int]) -> list[int]:
        """Extra replicas wanted for each leading block, non-increasing; stops at the first cold block."""
        wanted: list[int] = []
        for block in blocks:
            intensity = self._counts[block] / len(self._recent)
            tier = next((extra for level, extra in REPLICA_TIERS if intensity >= level), 0)
            tier = min(tier, wanted[-1]) if wanted else tier
            if tier == 0:
                break
            wanted.append(tier)
        return wanted


class _Cluster:
    def __init__(self, strategy: str, config: SimConfig) -> None:
        self.strategy, self.config = strategy, config
        self.nodes = [_Node(i, _new_cache(config.capacity_blocks, config.eviction)) for i in range(config.nodes)]
        self.pool = LruCache(config.pool_blocks) if config.pool_blocks != 0 else None
        self.rng = random.Random(config.seed)
        self.hotspots = _Hotspots(config.hotspot_window)
        self.local_hits = self.pool_hits = self.replicated = 0
        self.waits: list[float] = []

    def choose(self, blocks: Sequence[int], now: float) -> _Node:
        if self.strategy == "random":
            return self.nodes[self.rng.randrange(len(self.nodes))]
        if self.strategy == "least_loaded":
            return min(self.nodes, key=lambda node: node.rank(now))
        matches = [leading_hits(blocks, node.cache) for node in self.nodes]
        longest = max(matches)
        return min((n for n, m in zip(self.nodes, matches, strict=True) if m == longest), key=lambda node: node.rank(now))

    def serve(self, record: TraceRecord) -> None:
        now, blocks = record.timestamp_ms / 1000, record.hash_ids
        node = self.choose(blocks, now)
        local = leading_hits(blocks, node.cache)
        pooled = leading_hits(blocks[local:], self.pool) if self.pool is not None else 0
        self.local_hits += local
        self.pool_hits += pooled
        self._occupy(node, now, record.input_length, min(record.input_length, (local + pooled) * self.config.block_size))
        touch_all(node.cache, blocks)
        if self.pool is not None:
            touch_all(self.pool, blocks)
        if self.strategy == "prefix_aware":
            self.hotspots.add(blocks)
            self._replicate(node, blocks, now)

    def _occupy(self, node: _Node, now: float, tokens: int, cached_tokens: int) -> None:
        config = self.config
        service = (recompute_seconds(config.model, tokens, config.gpu, config.gpus_per_node)
                   - recompute_seconds(config.model, cached_tokens, config.gpu, config.gpus_per_node))
        start = max(now, node.busy_until)
        self.waits.append(start - now)
        node.busy_until = start + service
        node.requests += 1
        node.work_s += service

    def _replicate(self, home: _Node, blocks: Sequence[int], now: float) -> None:
        wanted = self.hotspots.replicas(blocks)
        if not wanted:
            return
        others = sorted((n for n in self.nodes if n is not home), key=lambda node: node.rank(now))
        for rank, target in enumerate(others[: wanted[0]]):
            hot_prefix = sum(1 for extra in wanted if extra > rank)
            self.replicated += touch_all(target.cache, blocks[:hot_prefix])

    def result(self, records: Sequence[TraceRecord]) -> SimResult:
        waits = sorted(self.waits)
        return SimResult(
            strategy=self.strategy,
            requests=len(records),
            blocks=sum(len(r.hash_ids) for r in records),
            distinct_blocks=len({b for r in records for b in r.hash_ids}),
            local_hit_blocks=self.local_hits,
            pool_hit_blocks=self.pool_hits,
            replicated_blocks=self.replicated,
            node_requests=tuple(n.requests for n in self.nodes),
            node_work_s=tuple(n.work_s for n in self.nodes),
            mean_wait_s=sum(waits) / len(waits) if waits else 0.0,
            p99_wait_s=waits[min(len(waits) - 1, math.ceil(0.99 * len(waits)) - 1)] if waits else 0.0,
            cost_ratio=self.config.cost_ratio,
        )


def simulate(records: Sequence[TraceRecord], strategy: str, config: SimConfig | None = None, **options: object) -> SimResult:
    """Replay ``records`` through one strategy; ``options`` override ``SimConfig`` fields (nodes=..., ...)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    config = _configure(config, options)
    cluster = _Cluster(strategy, config)
    for record in records:
        cluster.serve(record)
    return cluster.result(records)


def _configure(config: SimConfig | None, options: dict[str, object]) -> SimConfig:
    fields = SimConfig.__dataclass_fields__
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise TypeError(f"unknown simulator option(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    if isinstance(options.get("gpu"), str):
        options = options | {"gpu": gpu_spec(str(options["gpu"]))}
    if isinstance(options.get("model"), str):
        name = str(options["model"])
        if name not in MODELS:
            raise ValueError(f"unknown model {name!r}; presets: {', '.join(MODELS)} (or pass a capacity.ModelShape)")
        options = options | {"model": MODELS[name]}
    merged = dataclasses.replace(config or SimConfig(), **options)  # type: ignore[arg-type]
    merged.check()
    return merged


def compare(records: Sequence[TraceRecord], strategies: Iterable[str] = STRATEGIES, config: SimConfig | None = None,
            **options: object) -> list[SimResult]:
    return [simulate(records, strategy, config, **options) for strategy in strategies]


def table(results: Sequence[SimResult]) -> str:
    """A Markdown table; the score column is relative to the first result."""
    if not results:
        return "(no results)"
    base = results[0]
    header = ("| strategy | hit ratio | local | pool | busiest node's requests | work max/mean | work CV "
              "| mean wait s | p99 wait s | replicated blocks | cost score | vs " + base.strategy + " |")
    rows = [header, "|" + "---|" * 12]
    for r in results:
        rows.append(
            f"| {r.strategy} | {r.hit_ratio:.1%} | {r.local_hit_ratio:.1%} | {r.pool_hit_ratio:.1%} "
            f"| {r.max_request_share:.1%} | {r.work_max_over_mean:.2f} | {r.work_cv:.2f} | {r.mean_wait_s:.2f} "
            f"| {r.p99_wait_s:.2f} | {r.replicated_blocks} | {r.cost_score:.1f} | {r.cost_score - base.cost_score:+.1f} |"
        )
    return "\n".join(rows)


def plot(results: Sequence[SimResult], path: Path) -> None:
    """Hit ratios (local + pool) and load concentration side by side, as a PNG."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"the simulator chart needs matplotlib: {install_extra('report')}") from None
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    figure = Figure(figsize=(11, 4), layout="constrained")
    hits, load, wait = figure.subplots(1, 3)
    names = [r.strategy for r in results]
    local = [100 * r.local_hit_ratio for r in results]
    hits.bar(names, local, label="local")
    hits.bar(names, [100 * r.pool_hit_ratio for r in results], bottom=local, label="pool")
    hits.set_ylabel("hit ratio (% of blocks)")
    hits.legend()
    load.bar(names, [r.work_max_over_mean for r in results])
    load.axhline(1.0, color="grey", linewidth=0.8)
    load.set_ylabel("busiest node's work / mean")
    wait.bar(names, [r.p99_wait_s for r in results])
    wait.set_ylabel("p99 queueing before prefill (s)")
    for axis in (hits, load, wait):
        axis.tick_params(axis="x", labelrotation=20)
    figure.savefig(path)


def _capacity(text: str) -> int | None:
    if text in ("inf", "unbounded"):
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a block count >= 0 or 'inf', got {text!r}")
    return value


def _strategies(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STRATEGIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown strategy {', '.join(unknown) or '(none)'}; valid: {', '.join(STRATEGIES)}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pytest-mooncake simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", type=Path, help="Mooncake JSONL trace (e.g. fixtures/traces/conversation_trace.jsonl)")
    parser.add_argument("--strategies", type=_strategies, default=list(STRATEGIES), help="comma-separated (default: all)")
    parser.add_argument("--nodes", type=int, default=None, help="prefill nodes (default: 4)")
    parser.add_argument("--capacity-blocks", type=_capacity, default=None, help="local cache per node, blocks or 'inf' (default)")
    parser.add_argument("--eviction", choices=EVICTIONS, default="lru", help="local cache eviction (default: lru)")
    parser.add_argument("--pool-blocks", type=_capacity, default=argparse.SUPPRESS,
                        help="global Mooncake pool, blocks or 'inf'; 0: no pool (default)")
    parser.add_argument("--pool-bytes", metavar="SIZE",
                        help="global Mooncake pool as bytes (e.g. 2GiB: 2 store nodes of 1GiB), turned into blocks of "
                             "--block-size tokens of --model's KV; instead of --pool-blocks")
    parser.add_argument("--cost-ratio", type=float, default=150.0, help="GPU:storage cost ratio (default: 150)")
    parser.add_argument("--hotspot-window", type=int, default=100, help="requests over which hotspot intensity is measured")
    parser.add_argument("--model", choices=sorted(MODELS), default="llama3-70b",
                        help="shape that sets prefill time and, with --pool-bytes, the KV bytes of a block")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="A800", help="GPU that sets prefill time (peak dense bf16)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    parser.add_argument("--block-size", type=int, default=BLOCK_TOKENS, help="tokens per hash id (Mooncake traces: 512)")
    parser.add_argument("--first-n", type=int, default=None, help="only the first N requests")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random strategy")
    parser.add_argument("--chart", type=Path, help="write a PNG chart here")
    parser.add_argument("--json", type=Path, help="write the results as JSON here")
    parser.add_argument("--tiers", action="store_true",
                        help="instead of comparing strategies, predict the hit tokens of each tier of one vLLM that "
                             "gets the trace's requests in order, one at a time: its local prefix cache "
                             "(--capacity-blocks usable blocks) then the Mooncake pool (--pool-blocks/--pool-bytes), "
                             "with vLLM's rules (the block holding a prompt's last token never hits); a trace a "
                             "live replay saved (128-token blocks: --block-size 128) gives its prediction back")
    return parser


def _usage_error(message: str) -> int:
    print(f"pytest-mooncake simulate: {message}", file=sys.stderr)
    return USAGE_ERROR


def _pool_blocks(args: argparse.Namespace) -> int | None:
    """--pool-blocks, or --pool-bytes in blocks of --model's KV; ValueError says what is wrong."""
    if args.pool_bytes is None:
        return getattr(args, "pool_blocks", 0)
    if hasattr(args, "pool_blocks"):
        raise ValueError("give the pool as --pool-blocks or as --pool-bytes, not both")
    try:
        size = parse_size(args.pool_bytes)
    except ValueError as exc:
        raise ValueError(f"--pool-bytes {args.pool_bytes}: {exc}") from None
    from pytest_mooncake.tools.tiers import pool_blocks_for

    blocks = pool_blocks_for(size, MODELS[args.model], args.block_size)
    if size and not blocks:
        raise ValueError(f"--pool-bytes {args.pool_bytes} holds no whole block: one {args.block_size}-token block of "
                         f"{args.model} KV is {MODELS[args.model].kv_bytes(args.block_size)} bytes (pass --model for "
                         "the served model, 0 for no pool)")
    return blocks


def cli_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.first_n is not None and args.first_n < 1:
        print(f"pytest-mooncake simulate: --first-n {args.first_n}: expected a whole number >= 1 "
              "(omit it to simulate the whole trace)", file=sys.stderr)
        return USAGE_ERROR
    try:
        records = load_trace(args.trace, args.block_size, args.first_n)
    except (OSError, TraceFormatError) as exc:
        print(f"pytest-mooncake simulate: cannot use the trace: {exc}", file=sys.stderr)
        return USAGE_ERROR
    if not records:
        print(f"pytest-mooncake simulate: {args.trace} holds no requests; expected a Mooncake JSONL trace, one "
              'record per line ({"timestamp": ..., "input_length": ..., "output_length": ..., "hash_ids": [...]})',
              file=sys.stderr)
        return USAGE_ERROR
    try:
        pool_blocks = _pool_blocks(args)
    except ValueError as exc:
        return _usage_error(str(exc))
    if args.tiers:
        return _tiers(args, records, pool_blocks)
    nodes = 4 if args.nodes is None else args.nodes
    config = SimConfig(nodes=nodes, capacity_blocks=args.capacity_blocks, eviction=args.eviction,
                       pool_blocks=pool_blocks, cost_ratio=args.cost_ratio, hotspot_window=args.hotspot_window,
                       block_size=args.block_size, model=MODELS[args.model], gpu=GPUS[args.gpu],
                       gpus_per_node=args.gpus_per_node, seed=args.seed)
    try:
        results = compare(records, args.strategies, config)
    except ValueError as exc:
        print(f"pytest-mooncake simulate: {exc}", file=sys.stderr)
        return 2
    print(f"{len(records)} requests from {args.trace}, {nodes} nodes\n")
    print(table(results))
    if args.chart:
        plot(results, args.chart)
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in results], indent=2) + "\n", encoding="utf-8")
    return 0


def _tiers(args: argparse.Namespace, records: Sequence[TraceRecord], pool_blocks: int | None) -> int:
    from pytest_mooncake.tools.tiers import predict_tiers

    misplaced = [flag for flag, given in (("--nodes", args.nodes not in (None, 1)), ("--chart", args.chart),
                                           ("--eviction lfu", args.eviction != "lru")) if given]
    if misplaced:
        verb = "does" if len(misplaced) == 1 else "do"
        return _usage_error(f"--tiers predicts one vLLM with an LRU local cache; {', '.join(misplaced)} {verb} not apply")
    try:
        prediction = predict_tiers(records, local_blocks=args.capacity_blocks, pool_blocks=pool_blocks,
                                   block_tokens=args.block_size)
    except ValueError as exc:
        return _usage_error(str(exc))
    print(f"{len(records)} requests from {args.trace}, one vLLM, in order: {prediction.summary()}\n")
    for tier, tokens, ratio in (("local", prediction.local_tokens, prediction.local_ratio),
                                ("Mooncake", prediction.pool_tokens, prediction.pool_ratio)):
        print(f"{tier} tier: predicted {ratio:.1%} of prompt tokens ({tokens} of {prediction.prompt_tokens})")
    if args.json:
        args.json.write_text(json.dumps(prediction.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0
