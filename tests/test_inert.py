"""The plugin costs nothing where it is not used, and is itself where it is (harness/session.py
says when a session becomes a mooncake session). Each run is a subprocess: signal handlers,
temp directories and imported modules are then the run's own."""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

# What the inner tests check about their own process, printed for the outer test to read.
PROBE = """
import signal, sys

def probe(config):
    print("SIGTERM-DEFAULT", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    print("PLUGIN-LOADED", config.pluginmanager.has_plugin("mooncake"))
    for name in ("pytest_mooncake.endpoints.topology", "pytest_mooncake.config.options",
                 "pytest_mooncake.cluster.nodes", "pytest_mooncake.results.store", "pytest_mooncake.harness.report_hooks"):
        print("IMPORTED", name, name in sys.modules)
"""


Runner = Callable[..., tuple[pytest.RunResult, Path]]


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """A run with a TMPDIR of its own, so what it leaves there is what it made, and no mooncake
    setting but those it is given."""

    def run(*args: str, env: dict[str, str] | None = None) -> tuple[pytest.RunResult, Path]:
        tmpdir = pytester.mkdir("tmpdir-of-the-run")
        for name in [n for n in os.environ if n.startswith("MOONCAKE_")]:
            monkeypatch.delenv(name)
        monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
        for name, value in {"TMPDIR": str(tmpdir), **(env or {})}.items():
            monkeypatch.setenv(name, value)
        return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", *args, timeout=120), tmpdir

    return run


def _unrelated_project(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_unrelated="""
        def test_unrelated(request):
            from conftest import probe
            probe(request.config)
        """)


def test_an_unrelated_run_gets_nothing_from_the_plugin(pytester: pytest.Pytester, run: Runner) -> None:
    _unrelated_project(pytester)
    result, tmpdir = run()
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "PLUGIN-LOADED True" in out, "the plugin must be loaded for this test to mean anything"
    assert [line for line in out.splitlines() if line.startswith("mooncake") or "mooncake results" in line] == [], \
        f"no mooncake header or summary:\n{out}"
    assert "SIGTERM-DEFAULT True" in out, "SIGTERM is left alone"
    result.stdout.fnmatch_lines(["IMPORTED pytest_mooncake.endpoints.topology False"])
    result.stdout.no_fnmatch_line("IMPORTED * True")  # no cluster, endpoint, results or report module
    assert list(tmpdir.iterdir()) == [], "no temp directory made"


def test_a_run_whose_test_uses_a_fixture_is_a_mooncake_run(pytester: pytest.Pytester, run: Runner) -> None:
    pytester.makeconftest(PROBE)
    pytester.makepyfile(test_used="""
        def test_used(request, mooncake_config):
            from conftest import probe
            probe(request.config)
            assert mooncake_config.protocol == "tcp"
        """)
    result, _ = run()
    result.assert_outcomes(passed=1)
    # Activated by the collection: the header follows the "collected" line.
    result.stdout.fnmatch_lines(["collected 1 item", "mooncake: spawn (netns=auto) | protocol=tcp | *"])
    result.stdout.fnmatch_lines(["*SIGTERM-DEFAULT False", "PLUGIN-LOADED True",
                                 "IMPORTED pytest_mooncake.harness.report_hooks True"])


def test_a_mooncake_marker_activates_too(pytester: pytest.Pytester, run: Runner) -> None:
    pytester.makepyfile(test_marked="""
        import pytest, signal

        @pytest.mark.destructive
        def test_marked():
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        """)
    result, _ = run()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["mooncake: spawn *"])


def test_first_use_activates_a_session_its_collection_did_not(pytester: pytest.Pytester, run: Runner) -> None:
    """A fixture asked for at run time (or one a conftest made with the factories) is not in any
    test's fixture names: its first call of the session state makes the session a mooncake one."""
    pytester.makepyfile(test_late="""
        import signal

        def test_late(request):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
            run_id = request.getfixturevalue("mooncake_run_id")
            assert run_id.startswith("pmc-")
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        """)
    result, _ = run()
    result.assert_outcomes(passed=1)


def test_the_settings_asked_for_at_collection_activate(pytester: pytest.Pytester, run: Runner) -> None:
    """``pytest suites/serving`` with no option: a suite's pytest_generate_tests reads the settings
    (MooncakeConfig.of) before any test is collected; that read makes it a mooncake session."""
    pytester.makepyfile(test_generated="""
        from pytest_mooncake import MooncakeConfig

        def pytest_generate_tests(metafunc):
            metafunc.parametrize("looks", [MooncakeConfig.of(metafunc.config).verdict_looks])

        def test_generated(looks):
            assert looks == 24
        """)
    result, _ = run()
    result.assert_outcomes(passed=1)


def test_a_given_setting_activates_at_start_up(pytester: pytest.Pytester, run: Runner) -> None:
    _unrelated_project(pytester)
    result, _ = run("--mooncake-store-nodes=3")
    result.assert_outcomes(passed=1)
    # The header comes before the collection, as pytest prints headers.
    result.stdout.fnmatch_lines(["mooncake: spawn (netns=auto) | protocol=tcp | store_nodes=3 x *", "collected 1 item"])
    result.stdout.fnmatch_lines(["*SIGTERM-DEFAULT False"])


@pytest.mark.parametrize(
    ("args", "env", "source"),
    [(("--mooncake-store-nodes=many",), {}, "command line --mooncake-store-nodes"),
     ((), {"MOONCAKE_STORE_NODES": "many"}, "environment MOONCAKE_STORE_NODES")],
)
def test_bad_input_stops_at_start_up_even_when_no_test_uses_the_plugin(
    pytester: pytest.Pytester, run: Runner, args: tuple[str, ...], env: dict[str, str], source: str
) -> None:
    _unrelated_project(pytester)
    result, _ = run(*args, env=env)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert source in result.stderr.str()
    result.stdout.no_fnmatch_line("*test_unrelated*")


@pytest.fixture
def xdist() -> None:
    if importlib.util.find_spec("xdist") is None:  # in the dev extra: CI has it
        (pytest.fail if os.environ.get("CI") else pytest.skip)("pytest-xdist is not installed (pip install -e '.[dev]')")


def test_xdist_with_a_setting_is_refused_at_start_up(pytester: pytest.Pytester, run: Runner, xdist: None) -> None:
    _unrelated_project(pytester)
    result, _ = run("-n", "2", "--mooncake-store-nodes=3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-mooncake does not run under pytest-xdist: *Fix: run the mooncake tests without -n*"])


def test_xdist_in_an_unrelated_project_is_unaffected(pytester: pytest.Pytester, run: Runner, xdist: None) -> None:
    _unrelated_project(pytester)
    pytester.makepyfile(test_more="def test_more():\n    pass\n")
    result, _ = run("-n", "2")
    result.assert_outcomes(passed=2)
    result.stdout.no_fnmatch_line("mooncake*")
    result.stdout.no_fnmatch_line("*pytest-mooncake does not run*")


def test_xdist_refuses_a_test_that_uses_the_plugin(pytester: pytest.Pytester, run: Runner, xdist: None) -> None:
    """The controller does not collect, so only a worker sees the test: it errors with the line."""
    pytester.makepyfile(test_used="""
        def test_used(mooncake_config):
            pass

        def test_other():
            pass
        """)
    result, _ = run("-n", "2")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*pytest-mooncake does not run under pytest-xdist*"])
    result.stdout.no_fnmatch_line("*INTERNALERROR*")


def test_every_fixture_of_the_plugin_activates(pytester: pytest.Pytester) -> None:
    """``plugin.FIXTURES`` is the list a collected test's fixtures are checked against: a fixture
    missing from it would be used by a session that never became a mooncake session at collection."""
    from pytest_mooncake.plugin import FIXTURES

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--fixtures")
    listed = set()
    for line in result.stdout.lines:
        match = re.match(r"^(\w+)(?: \[\w+ scope\])? -- .*pytest_mooncake/(plugin|harness/factories)\.py:\d+$", line)
        if match:
            listed.add(match.group(1))
    assert listed and listed == set(FIXTURES)
