"""The adapters over what pytest, mirakuru and allure-pytest keep private or only name: a release
that changes them fails here, by name, instead of somewhere in a run."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import mirakuru
import pytest

from pytest_mooncake.runtime.mirakuru_private import set_output, stop_grace


def test_run_as_session_is_the_whole_session_and_its_exit_status(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
        from pytest_mooncake.harness.pytest_private import run_as_session

        def _body(config, session):
            config.pluginmanager.get_plugin("terminalreporter").write_line(f"BODY RAN in {type(session).__name__}")
            return 3

        def pytest_cmdline_main(config):
            return run_as_session(config, _body)

        def pytest_sessionfinish(session, exitstatus):
            print(f"SESSIONFINISH exitstatus={int(exitstatus)}")
        """)
    pytester.makepyfile(test_never="def test_never():\n    raise AssertionError('no test runs')\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    assert result.ret == 3
    result.stdout.fnmatch_lines(["BODY RAN in Session", "SESSIONFINISH exitstatus=3"])
    result.stdout.no_fnmatch_line("*test_never*")


def _wait_for_text(path: Path, text: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return True
        time.sleep(0.05)
    return False


def test_set_output_sends_the_next_start_to_the_new_handle(tmp_path: Path) -> None:
    command = ["sh", "-c", "echo started; exec sleep 30"]
    with open(tmp_path / "first.log", "wb") as first, open(tmp_path / "second.log", "wb") as second:
        executor = mirakuru.SimpleExecutor(command, timeout=10, stdout=first)
        executor.start()
        try:
            assert _wait_for_text(tmp_path / "first.log", "started")
        finally:
            executor.stop()
        set_output(executor, second)
        executor.start()
        try:
            assert _wait_for_text(tmp_path / "second.log", "started")
        finally:
            executor.stop()
    assert (tmp_path / "first.log").read_text().count("started") == 1


def test_stop_grace_bounds_the_wait_for_a_group_that_ignores_sigterm() -> None:
    # Ignored signals stay ignored across exec: the whole group ignores SIGTERM.
    executor = mirakuru.SimpleExecutor(["sh", "-c", "trap '' TERM; exec sleep 60"], timeout=60)
    executor.start()
    pid = executor.process.pid
    started = time.monotonic()
    try:
        with stop_grace(executor, 0.5):
            executor.stop()
    except mirakuru.exceptions.ProcessFinishedWithError:
        pass  # killed after the grace: SIGKILL, not the SIGTERM stop() expected
    finally:
        if executor.running():
            os.killpg(pid, signal.SIGKILL)
    assert time.monotonic() - started < 10, "stop() waited out the 60 s start timeout, not the 0.5 s grace"
    assert not executor.running()
    assert executor._timeout == 60, "the start timeout is back for the next start"


def test_allure_records_only_with_its_listener(pytester: pytest.Pytester) -> None:
    """``results.allure_steps.active`` asks the session's plugin manager for allure-pytest's listener,
    which it registers as ``allure_listener`` only with --alluredir."""
    pytest.importorskip("allure_pytest", reason="allure-pytest is in the report extra")
    pytester.makepyfile(test_active="""
        from pytest_mooncake.results import allure_steps as attach

        def test_active(mooncake_config):
            print(f"ACTIVE={attach.active()}")
        """)
    without = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s")
    without.stdout.fnmatch_lines(["*ACTIVE=False*"])
    with_dir = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-s", f"--alluredir={pytester.path / 'ar'}")
    with_dir.stdout.fnmatch_lines(["*ACTIVE=True*"])


PACKAGE = Path(__file__).resolve().parent.parent / "pytest_mooncake"


def _sources_but(adapter: str) -> dict[str, str]:
    return {str(path.relative_to(PACKAGE)): path.read_text("utf-8") for path in PACKAGE.rglob("*.py")
            if path.name != adapter}


def test_pytest_and_allure_internals_are_used_by_no_other_module() -> None:
    users = {name for name, text in _sources_but("pytest_private.py").items()
             if re.search(r"\b_pytest\b|\ballure_commons\b", text)}
    assert users == set(), "pytest's and allure_commons' internals belong in harness/pytest_private.py"


def test_private_attributes_of_pytest_objects_are_used_by_no_other_module(request: pytest.FixtureRequest) -> None:
    objects = (request.node, request.session, request.config, request.config.pluginmanager)
    private = {name for obj in objects for name in (*vars(obj), *dir(type(obj)))
               if name.startswith("_") and not name.startswith("__")}
    assert {"_fixtureinfo", "_fixturemanager"} <= private, "the attributes the adapter reads"
    users = {name: sorted(set(re.findall(r"\.(_\w+)\b", text)) & private)
             for name, text in _sources_but("pytest_private.py").items()}
    assert {name: used for name, used in users.items() if used} == {}, \
        "pytest's private attributes belong in harness/pytest_private.py"


def test_mirakuru_private_attributes_are_used_by_no_other_module() -> None:
    private = {name for name in vars(mirakuru.SimpleExecutor(["true"])) if name.startswith("_")}
    assert "_timeout" in private and "_stdout" in private, "the attributes the adapter sets"
    users = {name: sorted(set(re.findall(r"\.(_\w+)\b", text)) & private)
             for name, text in _sources_but("mirakuru_private.py").items()}
    assert {name: used for name, used in users.items() if used} == {}, \
        "mirakuru's private attributes belong in runtime/mirakuru_private.py"
