"""Attach mode is read-mostly: what can evict other tenants' keys runs only on an explicit opt-in."""

from __future__ import annotations

import pytest

from pytest_mooncake.cluster.metrics import Snapshot
from pytest_mooncake.config.markers import skip_reason


class _Marked:
    def __init__(self, *names: str) -> None:
        self.names = names

    def get_closest_marker(self, name: str) -> object:
        return object() if name in self.names else None


@pytest.mark.parametrize(("attached", "allow", "skipped"), [(True, False, True), (True, True, False), (False, False, False)])
def test_evicting_tests_need_the_opt_in_on_an_attached_cluster(attached: bool, allow: bool, skipped: bool) -> None:
    reason = skip_reason(_Marked("evicts"), "tcp", attached, allow)  # type: ignore[arg-type]
    if skipped:
        assert reason == ("fills the attached cluster past its capacity, which evicts OTHER tenants' KV "
                          "(Mooncake's eviction is global): pass --mooncake-allow-eviction to run it anyway")
    else:
        assert reason is None


def test_the_opt_in_does_not_unlock_destructive_tests() -> None:
    reason = skip_reason(_Marked("destructive", "evicts"), "tcp", True, True)  # type: ignore[arg-type]
    assert reason == "destructive (kills or restarts services): runs only on a cluster pytest spawned"


@pytest.mark.parametrize(("capacity", "allocated", "headroom"), [
    (1000, 0, 800), (1000, 300, 500), (1000, 800, 0), (1000, 950, 0), (0, 0, 0)])
def test_write_headroom_stops_below_the_watermark(capacity: int, allocated: int, headroom: int) -> None:
    snapshot = Snapshot({"master_total_capacity_bytes": capacity, "master_allocated_bytes": allocated})
    assert snapshot.write_headroom() == headroom


def test_allow_eviction_is_a_switch_on_the_command_line_and_yes_no_elsewhere(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_flag="def test_flag(mooncake_config):\n    print('ALLOW', mooncake_config.allow_eviction)\n")
    pytester.runpytest("-s").stdout.fnmatch_lines(["*ALLOW False*"])
    pytester.runpytest("-s", "--mooncake-allow-eviction").stdout.fnmatch_lines(["*ALLOW True*"])
    pytester.makeini("[pytest]\nmooncake_allow_eviction = yes\n")
    pytester.runpytest("-s").stdout.fnmatch_lines(["*ALLOW True*"])
    pytester.makeini("[pytest]\nmooncake_allow_eviction = maybe\n")
    result = pytester.runpytest("-s")
    result.stderr.fnmatch_lines(["*mooncake_allow_eviction = 'maybe' (from ini*): expected a yes/no value: one of true, yes,*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR
