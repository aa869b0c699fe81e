"""Every bad input ends the run at start-up: exit code 4, one message naming the key, where
the value came from, the value and the valid forms, within seconds and before anything is
spawned (the test project would spawn a cluster if it got that far)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from pytest_mooncake.qualify.traces import bundled_trace
from pytest_mooncake.results.store import SCHEMA_VERSION

SPAWNS = """
def test_spawns(mooncake_store):
    pass
"""


def _usage_error(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makepyfile(test_spawns=SPAWNS)
    started = time.monotonic()
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=60)
    assert time.monotonic() - started < 10, "a usage error must end the run within 10 s"
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    assert "Traceback" not in output and "mooncake_master" not in output, output
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    return errors[0]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("reuse_ratio: 1.5", "test_scenarios.high_reuse.reuse_ratio = 1.5 (from YAML *cfg.yaml): expected a number from 0 to 1*"),
        ("num_requests: -3", "test_scenarios.high_reuse.num_requests = -3 (from YAML *): expected a whole number >= 1"),
        ("num_requests: 0", "test_scenarios.high_reuse.num_requests = 0 (from YAML *): expected a whole number >= 1"),
        ("rounds: many", "test_scenarios.high_reuse.rounds = 'many' (from YAML *): expected a whole number >= 2 (round 1 is cold*"),
        ("rounds: 0", "test_scenarios.high_reuse.rounds = 0 (from YAML *): expected a whole number >= 2*"),
        ("num_request: 5", "test_scenarios.high_reuse (from YAML *): unknown key 'num_request' (did you mean 'num_requests'?); accepted: *"),
    ],
)
def test_bad_scenario_value(pytester: pytest.Pytester, entry: str, message: str) -> None:
    cfg = pytester.makefile(".yaml", cfg=f"test_scenarios:\n  high_reuse:\n    {entry}\n")
    line = _usage_error(pytester, f"--mooncake-config={cfg}")
    assert _matches(line, f"ERROR: {message}")


def test_unknown_top_level_key(pytester: pytest.Pytester) -> None:
    cfg = pytester.makefile(".yaml", cfg="mooncak:\n  master_ip: 10.0.0.5\n")
    line = _usage_error(pytester, f"--mooncake-config={cfg}")
    assert _matches(line, "ERROR: *cfg.yaml: top level: unknown key 'mooncak' (did you mean 'mooncake'?); accepted: *")


def test_unknown_key_stops_the_doctor_too(pytester: pytest.Pytester) -> None:
    cfg = pytester.makefile(".yaml", cfg="mooncak:\n  master_ip: 10.0.0.5\n")
    line = _usage_error(pytester, f"--mooncake-config={cfg}", "--mooncake-doctor")
    assert "unknown key 'mooncak'" in line


@pytest.mark.parametrize("size", ["1MiB", "0", "8388608"])
def test_segment_size_below_mooncake_minimum(pytester: pytest.Pytester, size: str) -> None:
    line = _usage_error(pytester, f"--mooncake-segment-size={size}")
    assert _matches(line, f"ERROR: mooncake_segment_size = '{size}' (from command line --mooncake-segment-size): "
                          "expected a size of at least 16MiB (Mooncake's smallest segment)*")


def test_negative_segment_size(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-segment-size=-200")
    assert _matches(line, "ERROR: mooncake_segment_size = '-200' (from command line --mooncake-segment-size): "
                          "expected a byte size such as 67108864, 64MiB*")


def test_one_round_is_rejected(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-rounds=1")
    assert _matches(line, "ERROR: mooncake_rounds = '1' (from command line --mooncake-rounds): expected a whole "
                          "number >= 2 (round 1 is cold, later rounds are cache hits)*")


def _matches(line: str, pattern: str) -> bool:
    import fnmatch

    assert fnmatch.fnmatchcase(line, pattern), f"{line!r} does not match {pattern!r}"
    return True


def test_malformed_openai_url_shows_an_openai_example(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-openai-base-url=10.0.0.5:8000")
    assert _matches(line, "ERROR: mooncake_openai_base_url = '10.0.0.5:8000' (from command line "
                          "--mooncake-openai-base-url): expected an http(s) URL, e.g. http://10.0.0.5:8000/v1*")


def _command_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from pytest_mooncake.tools.cli import main

    assert main(list(argv)) == pytest.ExitCode.USAGE_ERROR
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1, captured
    return captured.err.strip()


def test_simulate_an_empty_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    message = _command_error(capsys, "simulate", str(tmp_path / "empty.jsonl"))
    assert _matches(message, "pytest-mooncake simulate: */empty.jsonl holds no requests; expected a Mooncake JSONL trace*")


def test_simulate_first_n_zero(capsys: pytest.CaptureFixture[str]) -> None:
    message = _command_error(capsys, "simulate", str(bundled_trace()), "--first-n", "0")
    assert message.startswith("pytest-mooncake simulate: --first-n 0: expected a whole number >= 1")


@pytest.mark.parametrize(("records", "shown"), [('"oops"', "'records' = \"oops\""), ("[]", "'records' = []")])
def test_report_on_a_document_without_records(tmp_path: Path, capsys: pytest.CaptureFixture[str], records: str,
                                              shown: str) -> None:
    (tmp_path / "run.json").write_text(f'{{"schema_version": {SCHEMA_VERSION}, "records": {records}}}')
    message = _command_error(capsys, "report", str(tmp_path / "run.json"), "--out", str(tmp_path / "reports"))
    assert _matches(message, f"pytest-mooncake report: */run.json has {shown}: expected a pytest-mooncake results "
                             "document * whose 'records' is a non-empty list of measurement objects")
    assert not (tmp_path / "reports").exists()


def test_bundle_for_a_python_without_wheels(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mooncake.tools import bundle

    def no_wheels(command: list[str], **kwargs: object) -> None:
        assert "--dry-run" in command, "nothing is built or downloaded before the resolution succeeds"
        raise subprocess.CalledProcessError(1, command, stderr="ERROR: Could not find a version that satisfies "
                                                               "the requirement vllm==0.26.0\n")

    monkeypatch.setattr(bundle.subprocess, "run", no_wheels)
    message = _command_error(capsys, "bundle", "--python-version", "3.8", "--out", str(tmp_path / "out"))
    assert _matches(message, "pytest-mooncake bundle: --python-version 3.8: pip finds no wheels of vllm==0.26.0 * "
                             "for Python 3.8 (Could not find a version *); give a Python version they ship wheels for*")
    assert not (tmp_path / "out" / "wheelhouse").exists()


def test_bundle_python_version_must_be_a_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = _command_error(capsys, "bundle", "--python-version", "python3", "--out", str(tmp_path / "out"))
    assert message == "pytest-mooncake bundle: --python-version 'python3': expected a CPython 3 version such as 3.12"
