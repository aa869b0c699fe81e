"""pytest11 entry point: options, markers, header, preflight and the default fixtures."""

from __future__ import annotations

import signal
import sys
from collections.abc import Generator
from types import FrameType
from typing import TYPE_CHECKING

import pytest
from _pytest.main import wrap_session  # how pytest runs --fixtures: a session without tests

from pytest_mooncake.config import markers
from pytest_mooncake.config.options import CONFIG_KEY, MooncakeConfig, add_options, load_config
from pytest_mooncake.endpoints.topology import TOPOLOGIES
from pytest_mooncake.harness import eviction, factories, refusals, report_hooks
from pytest_mooncake.harness.doctor import run_checks
from pytest_mooncake.harness.session import STATE_KEY, SessionState, get_config, state
from pytest_mooncake.harness.startup import check_host, check_spawnable

if TYPE_CHECKING:
    from pytest_mooncake.harness.spawner import Record, Spawner

_SIGTERM_INSTALLED = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM would end Python without running finalizers; as KeyboardInterrupt,
    # pytest tears every fixture down, so spawned services stop with it. Once only: a second
    # SIGTERM (a supervisor repeating itself) would interrupt that teardown and end in pages of
    # chained tracebacks, with the services left running.
    signal.signal(signal.SIGTERM, _sigterm_again)
    raise KeyboardInterrupt("SIGTERM")


def _sigterm_again(signum: int, frame: FrameType | None) -> None:
    sys.stderr.write("pytest-mooncake: SIGTERM again: still stopping the services this run spawned "
                     "(SIGKILL ends at once and leaves them running)\n")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    markers.register(config)
    settings = load_config(config)
    config.stash[CONFIG_KEY] = settings
    config.stash[STATE_KEY] = SessionState(settings, rootdir=config.rootpath)
    config.pluginmanager.register(report_hooks, "mooncake-reporting")
    config.pluginmanager.register(eviction, "mooncake-eviction")
    if settings.compare:
        try:
            state(config).results.store.load_baseline(settings.compare)
        except (FileNotFoundError, ValueError) as exc:
            raise pytest.UsageError(str(exc)) from None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        config.stash[_SIGTERM_INSTALLED] = True


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_SIGTERM_INSTALLED, False):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if STATE_KEY in config.stash:
        state(config).close()


def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--mooncake-doctor`` is a session of its own, like pytest's ``--fixtures``: it prints
    one line per check and the verdict, and its exit status says it, with no Exit banner."""
    if not config.getoption("mooncake_doctor"):
        return None
    return int(wrap_session(config, _doctor))


def _doctor(config: pytest.Config, session: pytest.Session) -> int:
    checks = run_checks(get_config(config), endpoints_only=False)
    failed = [check for check in checks if not check.ok]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    for check in checks:
        reporter.write_line(check.line())
    verdict = f"{len(failed)} of {len(checks)} checks failed" if failed else f"all {len(checks)} checks passed"
    reporter.write_line(f"mooncake doctor: {verdict}")
    return 1 if failed else 0


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    settings = get_config(config)
    if config.getoption("mooncake_doctor") or config.getoption("collectonly"):
        return
    check_host(settings)
    if not (settings.attach or settings.openai_base_url or settings.baseline_url):
        return
    failed = [check for check in run_checks(settings, endpoints_only=True) if not check.ok]
    if failed:
        lines = "\n".join(check.line() for check in failed)
        raise pytest.UsageError(
            f"the attached endpoints failed their preflight:\n{lines}\n(run with --mooncake-doctor for every check)"
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    if STATE_KEY not in session.config.stash or not state(session.config).results.records:
        return
    session_state = state(session.config)
    document = session_state.results.document()
    session_state.results_path = session_state.results.write(document)
    lines, regressed = session_state.results.store.apply(document, get_config(session.config))
    session_state.summary += lines
    if regressed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if STATE_KEY not in config.stash:
        return
    if state(config).left_behind:
        terminalreporter.write_sep("-", "mooncake: what this run left in attached clusters")
        for line in state(config).left_behind:
            terminalreporter.write_line(line)
    if state(config).results_path is None:
        _no_results(terminalreporter, config)
        return
    terminalreporter.write_sep("-", f"mooncake results: {state(config).results_path}")
    for line in state(config).summary:
        terminalreporter.write_line(line)


def _no_results(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say so when a run that reached Mooncake wrote no results, and what kept it from measuring."""
    refused = refusals.refusals(config)
    if not refused and not state(config).results.topology:
        return  # a run that never used a Mooncake fixture: nothing to say
    terminalreporter.write_sep("-", "mooncake results: none written")
    why = f"; the deployment refused to set up: {'; '.join(refused)}" if refused else ""
    terminalreporter.write_line(f"no results file or report was written: no test recorded a measurement{why}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    refusals.shorten_repeat(item, call, report)
    return report


@pytest.hookimpl(trylast=True)  # after -k and -m deselect, so only the tests that will run count
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    markers.check_perf_markers(items)
    wanted = get_config(config).scenarios
    keep = [item for item in items if not _is_other_scenario(item, wanted)] if wanted else items
    deselected = [item for item in items if item not in keep]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = keep
    if not config.getoption("collectonly"):
        check_spawnable(items, get_config(config))


def _is_other_scenario(item: pytest.Item, wanted: tuple[str, ...]) -> bool:
    marked = {name for name in markers.SCENARIOS if item.get_closest_marker(name)}
    return bool(marked) and not marked & set(wanted)


def pytest_runtest_setup(item: pytest.Item) -> None:
    settings = get_config(item.config)
    reason = markers.skip_reason(item, settings.protocol, settings.attach, settings.allow_eviction)
    if reason:
        pytest.skip(reason)


def describe(settings: MooncakeConfig) -> str:
    if settings.attach:
        where = (
            f"attach master={settings.master} metadata={settings.metadata_url} "
            f"metrics={settings.metrics_url}"
        )
        nodes = f"extra store_nodes={settings.store_nodes}"
    else:
        where = f"spawn (netns={settings.netns})"
        nodes = f"store_nodes={settings.store_nodes} x {settings.segment_size / 2**20:g} MiB"
    serving = settings.openai_base_url or "spawn vLLM if installed"
    connector = TOPOLOGIES[settings.topology].connector or "no KV connector"
    return (
        f"mooncake: {where} | protocol={settings.protocol} | {nodes} | "
        f"buffer={settings.local_buffer_size / 2**20:g} MiB | openai={serving} | "
        f"topology={settings.topology} ({connector})"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = get_config(config)
    lines = [describe(settings)]
    if settings.config_file:
        lines.append(f"mooncake config file: {settings.config_file}")
    return lines


@pytest.fixture(scope="session")
def mooncake_config(request: pytest.FixtureRequest) -> MooncakeConfig:
    """The session's effective settings."""
    return get_config(request.config)


@pytest.fixture(scope="session")
def mooncake_run_id(request: pytest.FixtureRequest) -> str:
    """A unique prefix for keys and prompts of this run, so runs never see each other's data."""
    return state(request.config).run_id


@pytest.fixture
def mooncake_record(request: pytest.FixtureRequest) -> Record:
    """Record what this test measured under its own id: ``mooncake_record(Kind.SERVING, name, data)``."""
    from pytest_mooncake.harness.spawner import recorder

    return recorder(state(request.config), request.node.nodeid)


@pytest.fixture(scope="session")
def mooncake_spawn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Spawner:
    """Private masters, store clients, vLLM topologies and transfer benches for one test
    (``with mooncake_spawn.master() as master: ...``), each stopped when its block ends."""
    from pytest_mooncake.harness.spawner import Spawner

    return Spawner(state(request.config), tmp_path_factory)


mooncake_master = factories.mooncake_master()
mooncake_master_proc = factories.mooncake_master_proc()
mooncake_master_noproc = factories.mooncake_master_noproc()
mooncake_store_nodes = factories.mooncake_store_nodes("mooncake_master")
mooncake_store = factories.mooncake_store("mooncake_master", "mooncake_store_nodes")
mooncake_metrics = factories.mooncake_metrics("mooncake_master")
mooncake_kv_pool = factories.mooncake_kv_pool("mooncake_master")
mooncake_deployment = factories.mooncake_deployment()
openai_endpoint = factories.openai_endpoint()
# Module scope: a spawned baseline server stops after the A/B module instead of competing
# for CPU with every later measurement.
baseline_endpoint = factories.openai_endpoint(baseline=True, scope="module")
