"""Eviction on an attached master while our tests run is a finding, not a neutral figure.

Mooncake's eviction is global: when the pool passes its high watermark the master drops
anyone's keys. So in attach mode a test during which the master's evicted-key count grew
fails, naming the count, and so does the session (the end-of-run line says it), unless the
user opted in with ``--mooncake-allow-eviction``. Registered when the session becomes a mooncake
session (``harness.session.activate``);
the attached master fixtures ``watch`` their master.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

from pytest_mooncake.cluster.metrics import MasterMetrics, Snapshot
from pytest_mooncake.harness.session import get_config

EVICTED = "master_evicted_key_count"
_WATCHED = pytest.StashKey[list[MasterMetrics]]()
_SESSION_EVICTED = pytest.StashKey[float]()


def watch(config: pytest.Config, metrics: MasterMetrics) -> None:
    """Judge every later test by ``metrics``' master's evicted-key count."""
    get_config(config)  # a mooncake session from now on, with this module's hooks registered
    config.stash.setdefault(_WATCHED, []).append(metrics)


def _evicted(masters: list[MasterMetrics]) -> dict[str, float]:
    counts = {}
    for metrics in masters:
        try:
            counts[str(metrics.master.endpoint)] = metrics.snapshot().get(EVICTED)
        except OSError:
            continue  # an unreadable master is the end-of-run line's business, not this test's
    return counts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    masters = item.config.stash.get(_WATCHED, [])
    before = _evicted(masters)
    result = yield
    grown = {where: count - before[where] for where, count in _evicted(masters).items()
             if where in before and count > before[where]}
    if grown and not get_config(item.config).allow_eviction:
        where = ", ".join(f"{n:.0f} keys on {master}" for master, n in grown.items())
        pytest.fail(f"EVICTION: the attached master evicted {where} while this test ran. Mooncake's eviction is "
                    "global: other tenants' KV may be gone, and any stored-key figure of this test is polluted. "
                    "This run's KV outgrew the pool's room below its eviction watermark (or another tenant filled "
                    "it meanwhile); --mooncake-allow-eviction accepts that", pytrace=False)
    return result


def describe_pool(snapshot: Snapshot) -> str:
    """How full the pool is: what the run leaves its other tenants."""
    capacity, allocated = snapshot.get("master_total_capacity_bytes"), snapshot.get("master_allocated_bytes")
    share = f" ({allocated / capacity:.0%})" if capacity else ""
    return f"the pool now holds {allocated / 2**20:.1f} of {capacity / 2**20:.1f} MiB{share}"


def session_change(config: pytest.Config, metrics: MasterMetrics) -> tuple[dict[str, float], str]:
    """The attached master's change over the session and the end-of-run line saying it."""
    now: Snapshot = metrics.snapshot()
    delta = now.delta(metrics.baseline)
    change = {name: delta.get(name, 0.0) for name in ("master_key_count", "master_allocated_bytes", EVICTED)}
    keys, evicted = change["master_key_count"], change[EVICTED]
    stored = f"{keys:+.0f} keys" + (f" ({keys + evicted:.0f} stored, counting the {evicted:.0f} evicted)" if evicted else "")
    line = (f"{metrics.master.endpoint}: {stored}, {change['master_allocated_bytes'] / 2**20:+.1f} MiB allocated during "
            f"this run (master deltas; other clients' activity counts too); {describe_pool(now)}.")
    if evicted > 0:
        config.stash[_SESSION_EVICTED] = config.stash.get(_SESSION_EVICTED, 0.0) + evicted
        verdict = ("allowed by --mooncake-allow-eviction" if get_config(config).allow_eviction
                   else "this run FAILS for it (--mooncake-allow-eviction accepts it)")
        line = (f"EVICTION: the master evicted {evicted:.0f} keys during this run; its eviction is global, so other "
                f"tenants' KV may be gone; {verdict}. " + line)
    return change, line


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.stash.get(_SESSION_EVICTED, 0.0) and not get_config(session.config).allow_eviction:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
