"""pytest hooks for reports: Allure labels and attachments, the profile check, the session report.

Registered when the session becomes a mooncake session (``session.activate``). Everything
Allure-related is a no-op unless allure-pytest is installed and ``--alluredir`` is given.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.config.markers import SCENARIOS
from pytest_mooncake.config.profiles import session_profile
from pytest_mooncake.harness.session import STATE_KEY, get_config, state
from pytest_mooncake.report.quality_gates import gate_samples, write_perf_file
from pytest_mooncake.results import allure_steps
from pytest_mooncake.results.schema import Verdict, uncredit_unserved
from pytest_mooncake.results.store import load, machine_info

_FIRST_RECORD = pytest.StashKey[int]()
_CHART_DIR = pytest.StashKey[Path]()
_MACHINE = pytest.StashKey[dict[str, Any]]()
_GATES = pytest.StashKey[list[dict[str, Any]]]()


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    # An unknown profile is a usage error before any service starts.
    session_profile(config)
    allure_steps.bind(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    allure_steps.unbind(config)


def _hardware(machine: Mapping[str, Any]) -> str:
    gpus = machine.get("gpus") or []
    if gpus:
        names = sorted({str(g).split(",")[0] for g in gpus})
        return f"{len(gpus)} x {' + '.join(names)}"
    return f"cpu-only ({machine.get('cpus', '?')} cores)"


def _machine(config: pytest.Config) -> dict[str, Any]:
    # nvidia-smi takes a moment: probe once per session.
    if _MACHINE not in config.stash:
        config.stash[_MACHINE] = machine_info()
    return config.stash[_MACHINE]


def _labels(item: pytest.Item) -> dict[str, list[str]]:
    settings = get_config(item.config)
    labels = {
        "scenario": [name for name in SCENARIOS if item.get_closest_marker(name)],
        "topology": [f"{'attach' if settings.attach else 'spawn'}/{settings.protocol}"],
        "hardware": [_hardware(_machine(item.config))],
    }
    if settings.profile:
        labels["profile"] = [settings.profile]
    return labels


def pytest_runtest_setup(item: pytest.Item) -> None:
    allure_steps.forget_labels()
    if STATE_KEY in item.config.stash:
        item.stash[_FIRST_RECORD] = len(state(item.config).results.records)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    if not allure_steps.active():
        return
    for name, values in _labels(item).items():
        for value in values:
            allure_steps.label(name, value)


def _without_requests(data: Mapping[str, Any]) -> dict[str, Any]:
    """A record's data with per-request lists replaced by their length, to stay readable."""
    slim = {k: v for k, v in data.items() if k != "records"}
    if "rounds" in data:
        slim["rounds"] = [{**r, "records": len(r.get("records", []))} for r in data["rounds"]]
    if isinstance(data.get("records"), list):
        slim["records"] = len(data["records"])
    return slim


def _attach_records(item: pytest.Item) -> None:
    results = state(item.config).results
    # No mark: the session became active during this test, so every record is this test's.
    records = results.records[item.stash.get(_FIRST_RECORD, 0):]
    for record in records:
        allure_steps.attach_json(f"{record['kind']} {record['name']} statistics", _without_requests(record["data"]))
        if record["kind"] == "serving":
            _attach_charts(item.config, record)
        if record["kind"] == "replay":
            _attach_replay_chart(item.config, record)
        name = f"{record['kind']} {record['name']}"
        try:
            verdicts = uncredit_unserved([Verdict.from_dict(v) for v in record["data"].get("verdicts") or []])
        except ValueError as exc:
            raise ValueError(f"record {name!r} of {item.nodeid}: {exc}") from None
        samples = gate_samples(name, verdicts)
        item.config.stash.setdefault(_GATES, []).extend(samples)
    capacity = [record for record in records if record["kind"] == "capacity"]
    if capacity:
        _attach_capacity_charts(item, capacity)


def _chart_dir(config: pytest.Config) -> Path:
    if _CHART_DIR not in config.stash:
        config.stash[_CHART_DIR] = Path(tempfile.mkdtemp(prefix="pmc-charts-"))
    return config.stash[_CHART_DIR]


def _attach_charts(config: pytest.Config, record: Mapping[str, Any]) -> None:
    from pytest_mooncake.report import charts
    from pytest_mooncake.report.model import Run, pairs_of

    run = Run(Path("session"), {"records": [record]})
    for pair in pairs_of(run):
        try:
            paths = [charts.latency(pair, _chart_dir(config) / f"{pair.name}_latency.png"),
                     charts.throughput(pair, _chart_dir(config) / f"{pair.name}_throughput.png")]
            if pair.measured_breakdowns:
                paths.append(charts.breakdown([pair], _chart_dir(config) / f"{pair.name}_ttft_breakdown.png"))
            if pair.measured_tiers:
                paths.append(charts.tiers([pair], _chart_dir(config) / f"{pair.name}_cache_tiers.png"))
        except RuntimeError:  # no matplotlib: the statistics JSON is attached all the same
            return
        for path in paths:
            allure_steps.attach_file(path)


def _attach_replay_chart(config: pytest.Config, record: Mapping[str, Any]) -> None:
    from pytest_mooncake.report import charts

    name = str(record["name"])
    try:
        path = charts.replay(name, record["data"].get("records") or [], _chart_dir(config) / f"{Path(name).stem}_replay.png")
    except RuntimeError:  # no matplotlib
        return
    allure_steps.attach_file(path)


def _attach_capacity_charts(item: pytest.Item, records: list[Mapping[str, Any]]) -> None:
    """One set of curves for all topologies a test searched: they share the SLO line."""
    from pytest_mooncake.report import charts
    from pytest_mooncake.report.model import Run, capacities_of

    directory = _chart_dir(item.config) / item.name
    directory.mkdir(exist_ok=True)
    try:
        paths = charts.capacity_curves(capacities_of(Run(Path("session"), {"records": records})), directory)
    except RuntimeError:  # no matplotlib
        return
    for path in paths:
        allure_steps.attach_file(path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if STATE_KEY in item.config.stash:
        _record_outcome(item, report)
    if not allure_steps.active() or STATE_KEY not in item.config.stash:
        return
    if report.when == "call":
        _attach_records(item)
        allure_steps.attach_json("effective config (redacted)", get_config(item.config).redacted())
    if report.failed:
        for name, path in allure_steps.service_logs(item.config).items():
            allure_steps.attach_log(path, f"{name} log")


def _record_outcome(item: pytest.Item, report: pytest.TestReport) -> None:
    """The test's outcome in the results file: the report lists the tests that did not pass."""
    if report.when != "call" and report.passed:
        return
    kind = report.outcome if report.when == "call" or not report.failed else "error"
    crash = getattr(report.longrepr, "reprcrash", None)
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        message = str(report.longrepr[2])
    else:
        message = crash.message if crash is not None else str(report.longrepr or "")
    state(item.config).results.outcome(item.nodeid, kind, " / ".join(line.strip() for line in message.splitlines() if line.strip())[:300])


def _verdict_lines(document: Mapping[str, Any]) -> list[str]:
    """Every verdict of the run, worded as the results file, the report and Allure word it."""
    lines = []
    for record in document.get("records", []):
        try:
            verdicts = uncredit_unserved([Verdict.from_dict(v) for v in record.get("data", {}).get("verdicts") or []])
        except ValueError as exc:
            lines.append(f"{record['kind']} {record['name']}: unreadable verdict: {exc}")
            continue
        lines += [f"{record['kind']} {record['name']}: {verdict.message}" for verdict in verdicts]
    return lines


def _environment(document: Mapping[str, Any]) -> dict[str, str]:
    """Allure's Environment widget: one flat key=value list of the run."""
    machine = document.get("machine", {})
    env = {"run_id": document.get("run_id"), "git_commit": document.get("git_commit"),
           "hardware": _hardware(machine), "host": machine.get("hostname"), "platform": machine.get("platform"),
           "topology": json.dumps(document.get("topology", {}), sort_keys=True)}
    env |= {f"version.{k}": v for k, v in document.get("versions", {}).items()}
    env |= {f"config.{k}": v for k, v in document.get("config", {}).items() if v not in (None, "", [], {})}
    return {k: str(v) for k, v in env.items() if v is not None}


def _write_allure_files(config: pytest.Config, document: Mapping[str, Any]) -> None:
    alluredir = config.getoption("allure_report_dir", None)
    if not (alluredir and allure_steps.active()):
        return
    lines = [f"{key}={value}".replace("\n", " ") for key, value in _environment(document).items()]
    Path(alluredir, "environment.properties").write_text("\n".join(lines) + "\n", "utf-8")
    write_perf_file(Path(alluredir), config.stash.get(_GATES, []))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    # plugin.pytest_sessionfinish has written the results document by now.
    config = session.config
    if STATE_KEY not in config.stash or state(config).results_path is None:
        return
    session_state = state(config)
    document = load(session_state.results_path)
    session_state.summary[:0] = _verdict_lines(document)
    _write_allure_files(config, document)
    settings = get_config(config)
    if settings.report:
        session_state.summary.append(_session_report(session_state.results_path, settings.report, settings.server_cost))


def _session_report(results_path: Path, formats: tuple[str, ...], server_cost: float | None) -> str:
    from pytest_mooncake.report.build import ReportOptions, build
    from pytest_mooncake.report.model import load_run, pairs_of

    run = load_run(results_path)
    out = results_path.with_name(f"{run.run_id}-report")
    try:
        built = build([run], pairs_of(run), ReportOptions(out=out, formats=formats, server_cost=server_cost))
    except RuntimeError as exc:  # matplotlib missing: say so instead of failing the session
        return f"evaluation report not written: {exc}"
    return (f"evaluation report ({built.recommendation.outcome}, {built.recommendation.passed}/"
            f"{built.recommendation.total} verdicts passed): {', '.join(map(str, built.files))}")
