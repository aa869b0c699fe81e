"""Trace-driven simulation of cache-aware scheduling over N prefill nodes (seed 004, rebuilt).

Each node keeps a local KV cache of ``capacity_blocks`` blocks (LRU or LFU); an optional
global Mooncake pool (LRU) answers local misses. A request's prefix blocks are looked up
in order; the first miss ends reuse (KV depends on every earlier token). Nodes really get
busy: a request occupies its node for a service time proportional to the blocks it has
to compute, and load at arrival is the node's outstanding work — the seed's version kept
a load queue that never changed, which silently disabled load balancing.

Strategies: ``random`` (seeded), ``least_loaded``, ``cache_aware`` (longest cached prefix,
ties to the least loaded), ``prefix_aware`` (cache_aware plus hotspot replication: a
prefix whose share of recent requests — its *hotspot intensity* over a sliding window —
is >= 0.5 / 0.2 / 0.1 is replicated to 3 / 2 / 1 extra least-loaded nodes).
Cost score (seed 004): hit-ratio points are worth ``cost_ratio`` times a percentage point
of extra storage used by replicas, i.e. score = 100·hit_ratio·cost_ratio − 100·replicated/stored.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .traces import TraceRecord, load_trace

STRATEGIES = ("random", "least_loaded", "cache_aware", "prefix_aware")
SECONDS_PER_BLOCK = 0.05  # prefill time of one 512-token block on one node (relative scale)
HOTSPOT_WINDOW = 200
REPLICAS = ((0.5, 3), (0.2, 2), (0.1, 1))


class BlockCache:
    """A bounded set of block ids with LRU or LFU eviction (``None`` capacity: unbounded)."""

    def __init__(self, capacity: int | None, policy: str = "lru") -> None:
        self.capacity, self.policy = capacity, policy
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.hits: Counter[int] = Counter()

    def __contains__(self, block: int) -> bool:
        return block in self.blocks

    def touch(self, block: int) -> None:
        self.blocks[block] = None
        self.blocks.move_to_end(block)
        self.hits[block] += 1
        if self.capacity is not None and len(self.blocks) > self.capacity:
            victim = min(self.blocks, key=self.hits.__getitem__) if self.policy == "lfu" else next(iter(self.blocks))
            del self.blocks[victim]
            del self.hits[victim]

    def prefix(self, blocks: Sequence[int]) -> int:
        count = 0
        for block in blocks:
            if block not in self.blocks:
                break
            count += 1
        return count


@dataclass(frozen=True)
class SimResult:
    strategy: str
    requests: int
    blocks: int
    local_hits: int
    pool_hits: int
    replicated_blocks: int
    max_node_share: float  # busiest node's share of requests
    load_cv: float  # coefficient of variation of requests per node
    cost_score: float

    @property
    def hit_ratio(self) -> float:
        return (self.local_hits + self.pool_hits) / self.blocks if self.blocks else 0.0


class _Node:
    def __init__(self, capacity: int | None, policy: str) -> None:
        self.cache = BlockCache(capacity, policy)
        self.busy_until = 0.0
        self.requests = 0

    def load(self, now: float) -> float:
        return max(0.0, self.busy_until - now)


def simulate(
    records: Sequence[TraceRecord],
    strategy: str,
    *,
    nodes: int = 4,
    capacity_blocks: int | None = None,
    eviction: str = "lru",
    pool_blocks: int | None = 0,
    cost_ratio: float = 150.0,
    seed: int = 0,
) -> SimResult:
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    cluster = [_Node(capacity_blocks, eviction) for _ in range(nodes)]
    pool = BlockCache(pool_blocks, "lru") if pool_blocks != 0 else None
    rng = random.Random(seed)
    recent: deque[int] = deque(maxlen=HOTSPOT_WINDOW)
    heads: Counter[int] = Counter()
    local = pooled = replicated = total = 0
    for record in records:
        now = record.timestamp_ms / 1000
        blocks = record.hash_ids
        node = _choose(strategy, cluster, blocks, now, rng)
        hit_local = node.cache.prefix(blocks)
        hit_pool = pool.prefix(blocks[hit_local:]) if pool is not None else 0
        local, pooled, total = local + hit_local, pooled + hit_pool, total + len(blocks)
        computed = len(blocks) - hit_local - hit_pool
        node.busy_until = max(node.busy_until, now) + computed * SECONDS_PER_BLOCK
        node.requests += 1
        for block in blocks:
            node.cache.touch(block)
            if pool is not None:
                pool.touch(block)
        if strategy == "prefix_aware" and blocks:
            replicated += _replicate_hotspot(cluster, node, blocks, now, recent, heads)
    counts = [n.requests for n in cluster]
    mean = sum(counts) / nodes
    cv = (sum((c - mean) ** 2 for c in counts) / nodes) ** 0.5 / mean if mean else 0.0
    stored = sum(len(n.cache.blocks) for n in cluster) or 1
    hit_ratio = (local + pooled) / total if total else 0.0
    return SimResult(strategy, len(records), total, local, pooled, replicated, max(counts) / (sum(counts) or 1), cv,
                     100 * hit_ratio * cost_ratio - 100 * replicated / stored)


def _choose(strategy: str, cluster: list[_Node], blocks: Sequence[int], now: float, rng: random.Random) -> _Node:
    if strategy == "random":
        return rng.choice(cluster)
    if strategy == "least_loaded":
        return min(cluster, key=lambda n: n.load(now))
    return max(cluster, key=lambda n: (n.cache.prefix(blocks), -n.load(now)))


def _replicate_hotspot(cluster: list[_Node], home: _Node, blocks: Sequence[int], now: float,
                       recent: deque[int], heads: Counter[int]) -> int:
    """Copy a hot prefix to the least-loaded other nodes; returns blocks copied."""
    head = blocks[0]
    if len(recent) == recent.maxlen:
        heads[recent[0]] -= 1
    recent.append(head)
    heads[head] += 1
    intensity = heads[head] / len(recent)
    extra = next((count for level, count in REPLICAS if intensity >= level), 0)
    copied = 0
    for node in sorted((n for n in cluster if n is not home), key=lambda n: n.load(now))[:extra]:
        for block in blocks:
            if block not in node.cache:
                copied += 1
            node.cache.touch(block)
    return copied


def compare(records: Sequence[TraceRecord], strategies: Sequence[str] = STRATEGIES, **options: object) -> list[SimResult]:
    return [simulate(records, strategy, **options) for strategy in strategies]  # type: ignore[arg-type]


def table(results: Sequence[SimResult]) -> str:
    rows = ["| strategy | hit ratio | local | pool | busiest node share | load CV | replicated blocks | cost score |",
            "|---|---|---|---|---|---|---|---|"]
    rows += [f"| {r.strategy} | {r.hit_ratio:.1%} | {r.local_hits} | {r.pool_hits} | {r.max_node_share:.1%} | "
             f"{r.load_cv:.2f} | {r.replicated_blocks} | {r.cost_score:.1f} |" for r in results]
    return "\n".join(rows)


def plot(results: Sequence[SimResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r.strategy for r in results]
    left.bar(names, [100 * r.hit_ratio for r in results])
    left.set_ylabel("hit ratio (%)")
    right.bar(names, [100 * r.max_node_share for r in results])
    right.set_ylabel("busiest node's share of requests (%)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def cli_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pytest-mooncake simulate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trace", type=Path)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--capacity-blocks", type=int, default=None, help="per node (default: unbounded)")
    parser.add_argument("--eviction", choices=("lru", "lfu"), default="lru")
    parser.add_argument("--pool-blocks", type=int, default=0, help="global Mooncake pool; 0: none, -1: unbounded")
    parser.add_argument("--cost-ratio", type=float, default=150.0)
    parser.add_argument("--first-n", type=int, default=None)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--chart", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    records = load_trace(args.trace, args.block_size, args.first_n)
    results = compare(records, args.strategies.split(","), nodes=args.nodes, capacity_blocks=args.capacity_blocks,
                      eviction=args.eviction, pool_blocks=None if args.pool_blocks < 0 else args.pool_blocks,
                      cost_ratio=args.cost_ratio)
    print(table(results))
    if args.chart:
        plot(results, args.chart)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"hit_ratio": r.hit_ratio} for r in results], indent=2))
    return 0
