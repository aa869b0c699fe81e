"""Every bad input ends the run at start-up: exit code 4, one message naming the key, where
the value came from, the value and the valid forms, within seconds and before anything is
spawned (the test project would spawn a cluster if it got that far)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mooncake.errors import INSTALL_MOONCAKE
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
    errors = [line for line in result.stderr.lines if line.startswith("ERROR:")]
    assert len(errors) == 1, output
    # Nothing spawned: no master's log or traceback anywhere but in the message, which may name the binary.
    assert "Traceback" not in output and "mooncake_master" not in output.replace(errors[0], ""), output
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


# Issue 21: inputs that must stop at the door.

def test_empty_trace(pytester: pytest.Pytester) -> None:
    empty = pytester.path / "empty.jsonl"
    empty.write_text("\n")
    line = _usage_error(pytester, f"--mooncake-trace={empty}")
    assert _matches(line, f"ERROR: mooncake_trace = '{empty}' (from command line --mooncake-trace): the file holds no "
                          "requests; expected a Mooncake JSONL trace: one {\"timestamp\", *")


def test_missing_trace(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-trace=/nonexistent")
    assert _matches(line, "ERROR: mooncake_trace = '/nonexistent' (from command line --mooncake-trace): cannot read it "
                          "(No such file or directory); expected a Mooncake JSONL trace*")


def test_malformed_trace(pytester: pytest.Pytester) -> None:
    bad = pytester.path / "bad.jsonl"
    bad.write_text('{"timestamp": 0}\n')
    line = _usage_error(pytester, f"--mooncake-trace={bad}")
    assert _matches(line, f"ERROR: mooncake_trace = '{bad}' (from command line --mooncake-trace): {bad}:1: missing "
                          "*; expected a Mooncake JSONL trace*")


def test_unknown_scenario_lists_the_known_ones(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-scenarios=high_reuse,high_reus")
    assert line == ("ERROR: mooncake_scenarios = 'high_reuse,high_reus' (from command line --mooncake-scenarios): "
                    "unknown scenario 'high_reus' (did you mean 'high_reuse'?); known: high_reuse, medium_reuse, "
                    "low_reuse, long_context, multi_turn, cold_start, long_context_high_reuse, working_set")


def test_scenarios_the_yaml_defines_are_known(pytester: pytest.Pytester) -> None:
    cfg = pytester.makefile(".yaml", cfg="test_scenarios:\n  my_mix:\n    num_requests: 3\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--mooncake-config={cfg}", "--mooncake-scenarios=my_mix")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("topology", ["pd", "lmcache"])
def test_gpu_topology_on_a_host_without_a_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                              topology: str) -> None:
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))  # no nvidia-smi: a host without a GPU
    line = _usage_error(pytester, f"--mooncake-topology={topology}")
    assert _matches(line, f"ERROR: mooncake_topology = '{topology}' (from command line --mooncake-topology): cannot be "
                          "spawned on this host, which has no CUDA GPU (nvidia-smi or /dev/nvidia0 not found): *. Fix: "
                          "run on a GPU host, attach a deployment with --mooncake-openai-base-url=URL, or pick a "
                          "topology that runs on CPU: prefix-cache, baseline, mooncake-store, tiered, cross-instance, pd-store.")


def test_gpu_topology_against_an_attached_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mooncake.config.options import MooncakeConfig
    from pytest_mooncake.harness import startup

    monkeypatch.setattr(startup, "gpu_present", lambda: False)
    startup.check_host(MooncakeConfig.from_defaults(topology="pd", openai_base_url="http://10.0.0.5:8000/v1"))
    with pytest.raises(pytest.UsageError, match="cannot be spawned on this host"):
        startup.check_host(MooncakeConfig.from_defaults(topology="pd"))


def test_rdma_without_a_device(pytester: pytest.Pytester) -> None:
    from pytest_mooncake.config.markers import rdma_devices

    if rdma_devices():
        pytest.skip("this host has an RDMA device: the no-device and no-pyverbs cases are checked by "
                    "test_rdma_device_checks")
    line = _usage_error(pytester, "--mooncake-protocol=rdma")
    assert _matches(line, "ERROR: mooncake_protocol = 'rdma' (from command line --mooncake-protocol): *"
                          "Fix: * or use --mooncake-protocol=tcp.")


def test_rdma_device_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mooncake.config.options import MooncakeConfig
    from pytest_mooncake.harness import startup

    rdma = MooncakeConfig.from_defaults(protocol="rdma")
    monkeypatch.setattr(startup.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pytest.UsageError, match=r"pyverbs \(rdma-core's Python bindings\) is not importable by .*"
                                                r"apt-get install python3-pyverbs"):
        startup.check_host(rdma)
    monkeypatch.setattr(startup.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(startup, "rdma_devices", lambda: [])
    with pytest.raises(pytest.UsageError, match="pyverbs finds no RDMA device on this host, so Mooncake would fall "
                                                "back to TCP and report TCP numbers as RDMA"):
        startup.check_host(rdma)
    monkeypatch.setattr(startup, "rdma_devices", lambda: ["mlx5_0"])
    startup.check_host(rdma)
    startup.check_host(rdma.with_overrides(rdma_devices="mlx5_0"))
    with pytest.raises(pytest.UsageError, match="pyverbs finds no mlx5_9 on this host; it finds mlx5_0"):
        startup.check_host(rdma.with_overrides(rdma_devices="mlx5_0,mlx5_9"))


# What the Transfer Engine of mooncake-transfer-engine 0.3.x logs on a host without a usable RDMA device.
ENGINE_LOG_FALLBACK = """\
I1204 15:10:01.100000 4242 transfer_engine.cpp:120] Transfer Engine starting. Server: 127.0.0.1:15001, Metadata: http://127.0.0.1:8080/metadata
E1204 15:10:01.200000 4242 rdma_context.cpp:77] No RDMA devices found, check your device installation
W1204 15:10:01.200100 4242 transfer_engine.cpp:201] Falling back to TCP mode
I1204 15:10:01.300000 4242 transfer_engine_bench.cpp:569] Test completed: duration 2.05, batch count 34, throughput 1.11 GB/s
"""


def test_tcp_fallback_is_read_from_the_engine_log(tmp_path: Path) -> None:
    from pytest_mooncake.cluster.transport import TransportFallback, check_transport, tcp_fallback

    assert tcp_fallback(ENGINE_LOG_FALLBACK) == ("E1204 15:10:01.200000 4242 rdma_context.cpp:77] No RDMA devices "
                                                 "found, check your device installation")
    assert tcp_fallback(ENGINE_LOG_FALLBACK.replace("No RDMA devices found", "RDMA device mlx5_0 opened")
                        .replace("Falling back to TCP mode", "Installed RDMA transport")) is None
    log = tmp_path / "node.log"
    log.write_text(ENGINE_LOG_FALLBACK)
    check_transport("tcp", log, "store node n0")  # asked for TCP: TCP is no fallback
    with pytest.raises(TransportFallback, match=r"store node n0 was started with protocol=rdma, but its Transfer "
                                                r"Engine fell back to TCP \(.*node.log: 'E1204 .*No RDMA devices "
                                                r"found.*'\); whatever it measured would be a TCP number reported as RDMA"):
        check_transport("rdma", log, "store node n0")


def test_a_tcp_bandwidth_is_never_reported_as_rdma(tmp_path: Path) -> None:
    """The bench's initiator (a fake that prints the engine's fallback and a result) yields no result."""
    import sys
    from types import SimpleNamespace

    from pytest_mooncake.cluster.transfer_bench import run_initiator
    from pytest_mooncake.cluster.transport import TransportFallback

    fake_bench = tmp_path / "fake_transfer_engine_bench"
    fake_bench.write_text(f"#!{sys.executable}\nimport sys\nsys.stderr.write({ENGINE_LOG_FALLBACK!r})\n")
    fake_bench.chmod(0o755)
    master: Any = SimpleNamespace(protocol="rdma", metadata_url="http://127.0.0.1:8080/metadata", netns=None)
    with pytest.raises(TransportFallback, match="transfer_engine_bench initiator was started with protocol=rdma"):
        run_initiator(master, fake_bench, tmp_path, operation="write", block_size=65536, buffer_size=1 << 30, port=1)
    master.protocol = "tcp"
    result = run_initiator(master, fake_bench, tmp_path, operation="write", block_size=65536, buffer_size=1 << 30,
                           port=1)
    assert result.gbps == pytest.approx(1.11)


def test_a_connector_that_fell_back_to_tcp_fails_its_topology(tmp_path: Path) -> None:
    from pytest_mooncake.harness.factories import _check_transport

    log = tmp_path / "vllm-0.log"
    log.write_text(ENGINE_LOG_FALLBACK)
    _check_transport("mooncake-store", "tcp", log, "vllm-0")
    with pytest.raises(pytest.fail.Exception, match=r"topology mooncake-store: nothing was measured. vLLM instance "
                                                    r"vllm-0 was started with protocol=rdma, but its Transfer Engine "
                                                    r"fell back to TCP"):
        _check_transport("mooncake-store", "rdma", log, "vllm-0")


def test_multi_host_without_namespaces(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-multi-host", "--mooncake-netns=off")
    assert line == ("ERROR: mooncake_multi_host (from command line --mooncake-multi-host) puts every spawned process in "
                    "a network namespace of its own, but mooncake_netns = 'off' (from command line --mooncake-netns) "
                    "asks for none. Fix: drop one of the two (--mooncake-netns=auto or on works with "
                    "--mooncake-multi-host).")


@pytest.mark.parametrize(("size", "shown"), [("1", "1 B (9.53674e-07 MiB)"), ("8MiB", "8388608 B (8 MiB)")])
def test_local_buffer_below_the_minimum(pytester: pytest.Pytester, size: str, shown: str) -> None:
    line = _usage_error(pytester, f"--mooncake-local-buffer-size={size}")
    assert line == (f"ERROR: mooncake_local_buffer_size = {shown} (from command line --mooncake-local-buffer-size): "
                    "expected a size of at least 16MiB, e.g. 32MiB: the store suites put objects of up to 16 MiB (one "
                    "128-token KV block of Llama-3.1-8B) through the session's store client, and a put larger than "
                    "its buffer fails.")


def test_local_buffer_minimum_is_the_largest_store_object() -> None:
    from pytest_mooncake.qualify.capacity import MODELS
    from pytest_mooncake.config.options import MIN_LOCAL_BUFFER

    assert MODELS["llama-3.1-8b"].kv_bytes(128) == MIN_LOCAL_BUFFER


def test_missing_master_binary(pytester: pytest.Pytester) -> None:
    line = _usage_error(pytester, "--mooncake-master-bin=/nonexistent")
    assert line == ("ERROR: mooncake_master_bin = '/nonexistent' (from command line --mooncake-master-bin): no "
                    "executable file there. Fix: give the path of mooncake_master (the Mooncake wheel ships it: "
                    f"{INSTALL_MOONCAKE}), or drop the option to use the wheel's.")


def test_ha_masters_without_etcd(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    line = _usage_error(pytester, "--mooncake-ha-masters=2")
    assert line == ("ERROR: mooncake_ha_masters = '2' (from command line --mooncake-ha-masters): the masters elect "
                    "their leader through an etcd we spawn, and there is no etcd on $PATH. Fix: apt-get install "
                    "etcd-server (Debian/Ubuntu) or put an etcd release binary on $PATH, or use "
                    "--mooncake-ha-masters=0.")


def test_override_ini_is_named_as_the_source(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\n")
    line = _usage_error(pytester, "-o", "mooncake_segment_size=lots")
    assert _matches(line, "ERROR: mooncake_segment_size = 'lots' (from command line -o mooncake_segment_size): "
                          "expected a byte size such as 67108864, 64MiB*")


def test_store_suites_without_the_mooncake_wheel(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # The base wheel's view: a mooncake package without binaries first on sys.path, none on $PATH.
    pytester.mkpydir("mooncake")
    monkeypatch.setenv("PATH", str(pytester.mkdir("empty-bin")))
    pytester.makepyfile(test_more="def test_a(mooncake_store): pass\ndef test_b(mooncake_master): pass\n")
    line = _usage_error(pytester)
    assert _matches(line, "ERROR: mooncake_master not found (checked */mooncake/mooncake_master, $PATH (mooncake_master)), "
                          "and 3 collected tests spawn a Mooncake cluster (e.g. test_*). Fix: install the "
                          "?mooncake? extra: *; or give --mooncake-master-bin=PATH; or attach to a running "
                          "cluster with --mooncake-master=HOST:PORT.")


def test_report_on_a_binary_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run.json").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    message = _command_error(capsys, "report", str(tmp_path / "run.json"), "--out", str(tmp_path / "reports"))
    assert message == (f"pytest-mooncake report: {tmp_path / 'run.json'} is not a results document: it is not UTF-8 "
                       "text (byte 0 is 0x89): expected the JSON document a pytest-mooncake run writes "
                       "(<results_dir>/<run_id>.json)")


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    message = _command_error(capsys, "frobnicate")
    assert message == ("pytest-mooncake: unknown command 'frobnicate'; known: doctor, simulate, bundle, report "
                       "(pytest-mooncake --help says what each does)")


SLOW_START = """
import pathlib, time
import pytest

@pytest.fixture(scope="session")
def cluster(mooncake_config):  # a mooncake session: the plugin is inert in others
    yield
    pathlib.Path("tearing-down").touch()  # stopping spawned services takes a while
    time.sleep(3)

def test_serving(cluster):
    pathlib.Path("starting").touch()  # vLLM's start-up
    time.sleep(60)
"""


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert process.poll() is None and time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_sigterm_during_start_up_ends_cleanly(pytester: pytest.Pytester) -> None:
    """A supervisor's SIGTERM, repeated while the services stop, ends the run without a traceback."""
    import signal
    import sys

    pytester.makepyfile(test_slow=SLOW_START)
    process = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_slow.py"],
                               cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(pytester.path / "starting", process)
        process.send_signal(signal.SIGTERM)
        _wait_for(pytester.path / "tearing-down", process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == pytest.ExitCode.INTERRUPTED, output
    assert "Traceback" not in output and "During handling" not in output, output
    assert "pytest-mooncake: SIGTERM again: still stopping the services this run spawned" in output
    assert len(output.splitlines()) < 30, output
