"""In attach mode, eviction on the master while our tests run is a finding: the test fails, so does the run."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.qualify.protocol import RoundResult
from pytest_mooncake.qualify.reuse import evaluate

from .test_mooncake_evaluation import _run

CONFTEST = '''
import pytest
from pytest_mooncake.cluster.metrics import Snapshot
from pytest_mooncake.harness import eviction
from pytest_mooncake.harness.session import state

MiB = 2**20

class Master:
    endpoint = "10.0.0.9:50051"

class FakeMetrics:
    """An attached master whose pool holds 60 MiB of 100 and 10 keys; EVICTED grows when a test says so."""
    master = Master()
    evicted = 0.0

    def __init__(self):
        self.baseline = self.snapshot()

    def snapshot(self):
        return Snapshot({"master_evicted_key_count": FakeMetrics.evicted, "master_key_count": 10 - FakeMetrics.evicted,
                         "master_allocated_bytes": 60 * MiB, "master_total_capacity_bytes": 100 * MiB})

@pytest.fixture(scope="session", autouse=True)
def attached(request):
    metrics = FakeMetrics()
    eviction.watch(request.config, metrics)
    yield
    state(request.config).left_behind.append(eviction.session_change(request.config, metrics)[1])
'''

TESTS = '''
from conftest import FakeMetrics

def test_reads_only():
    pass

def test_writes_too_much():
    FakeMetrics.evicted += 3
'''


def test_a_test_during_which_the_master_evicts_fails_and_so_does_the_run(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_writers=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*EVICTION: the attached master evicted 3 keys on 10.0.0.9:50051 while this test ran.*",
        "*what this run left in attached clusters*",
        "EVICTION: the master evicted 3 keys during this run; its eviction is global, so other tenants' KV may be gone; "
        "this run FAILS for it (--mooncake-allow-eviction accepts it). 10.0.0.9:50051: -3 keys (0 stored, counting the "
        "3 evicted), +0.0 MiB allocated during this run*; the pool now holds 60.0 of 100.0 MiB (60%).*",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_the_opt_in_accepts_eviction_and_still_says_it(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_writers=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mooncake-allow-eviction")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["EVICTION: the master evicted 3 keys during this run; *; allowed by --mooncake-allow-eviction.*"])
    assert result.ret == pytest.ExitCode.OK


def test_no_eviction_keeps_the_end_of_run_line_plain(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_readers="def test_reads_only():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["10.0.0.9:50051: +0 keys, +0.0 MiB allocated during this run*the pool now holds 60.0 of 100.0 MiB (60%).*"])
    assert "EVICTION" not in result.stdout.str()


def test_stored_keys_count_the_evicted_and_a_comparison_beside_eviction_is_polluted() -> None:
    run = _run("mooncake-store", 7168.0, keys=-57)
    cold = run.rounds[0]
    polluted = dataclasses.replace(run, rounds=[RoundResult(cold.name, cold.records, cold.wall_s,
                                                            {**cold.counters, "master_evicted_key_count": 113.0}),
                                                *run.rounds[1:]])
    evaluation = evaluate(polluted, {})
    assert evaluation.mooncake is not None
    assert (evaluation.mooncake["stored_keys_cold"], evaluation.mooncake["evicted_keys"], evaluation.mooncake["polluted"]) \
        == (56.0, 113.0, True)
    assert not any(note.startswith("Mooncake stored") for note in evaluation.notes), "never a plain number"
    assert "POLLUTED: the master evicted 113 keys during this scenario, so the +56 keys counted as stored in the cold " \
           "round cannot be set against the 56 whole 128-token blocks its prompts predict" in evaluation.notes


def test_interleaved_rounds_count_their_shared_evictions_once() -> None:
    run = _run("mooncake-store", 0.0, cached=0)
    shared = {"master_key_count": 10.0, "master_evicted_key_count": 40.0}
    interleaved = dataclasses.replace(run, interleaved=True, rounds=[
        RoundResult(r.name, r.records, r.wall_s, shared) for r in run.rounds])
    evaluation = evaluate(dataclasses.replace(interleaved, scenario=dataclasses.replace(run.scenario, reuse=0.0)), {})
    assert evaluation.mooncake is not None and evaluation.mooncake["evicted_keys"] == 40.0


def test_the_report_leaves_polluted_stored_keys_out_and_says_so() -> None:
    from types import SimpleNamespace

    from pytest_mooncake.report.labels import TEXT
    from pytest_mooncake.report.model import measured_path

    clean = SimpleNamespace(topology="mooncake-store", mooncake={"served": True, "external_hit_tokens": 100,
                                                                 "stored_keys_cold": 40, "polluted": False})
    evicted = SimpleNamespace(topology="mooncake-store", mooncake={"served": True, "external_hit_tokens": 50,
                                                                   "stored_keys_cold": -57, "polluted": True})
    path = measured_path([clean, evicted])  # type: ignore[list-item]
    assert (path.stored_keys, path.polluted, path.external_hit_tokens) == (40, 1, 150)
    assert "POLLUTED: 1 scenario(s)" in TEXT["en"]["path_polluted"].format(n=path.polluted)
