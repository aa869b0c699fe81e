"""transfer_engine_bench: its result line, its transport flags, and the RDMA line rate."""

from pathlib import Path

import pytest

from pytest_mooncake.cluster.nodes import MasterHandle
from pytest_mooncake.cluster.transfer_bench import line_rate_gbps, parse_result, protocol_flags, run_initiator
from pytest_mooncake.config.parsing import HostPort
from pytest_mooncake.errors import MooncakeError


def test_parses_the_result_line() -> None:
    line = "I1122 12:32:21.532260 14986 transfer_engine_bench.cpp:569] Test completed: duration 2.05, batch count 34, throughput 1.11 GB/s"
    assert parse_result(line) == (2.05, 34, pytest.approx(1.11e9))
    assert parse_result(line.replace("GB/s", "GiB/s"))[2] == pytest.approx(1.11 * 2**30)


def test_missing_or_odd_lines_are_errors() -> None:
    with pytest.raises(ValueError, match="no 'Test completed"):
        parse_result("transfer_engine_bench.cpp:429] FAILED")
    with pytest.raises(ValueError, match="unknown throughput unit"):
        parse_result("Test completed: duration 1, batch count 1, throughput 1 PB/s")


def test_rdma_runs_name_their_devices_or_discover_them() -> None:
    assert protocol_flags("tcp", "mlx5_0") == ["--protocol=tcp"]
    assert protocol_flags("rdma", "mlx5_0,mlx5_1") == ["--protocol=rdma", "--device_name=mlx5_0,mlx5_1"]
    assert protocol_flags("rdma", "") == ["--protocol=rdma", "--auto_discovery=true"]


def test_line_rate_is_each_devices_fastest_port_summed(tmp_path: Path) -> None:
    for device, port, rate in (("mlx5_0", 1, "200 Gb/sec (4X HDR)"), ("mlx5_0", 2, "100 Gb/sec (4X EDR)"),
                               ("mlx5_1", 1, "400 Gb/sec (4X NDR)")):
        (tmp_path / device / "ports" / str(port)).mkdir(parents=True, exist_ok=True)
        (tmp_path / device / "ports" / str(port) / "rate").write_text(rate + "\n")
    assert line_rate_gbps(["mlx5_0"], tmp_path) == 25.0
    assert line_rate_gbps(["mlx5_0", "mlx5_1"], tmp_path) == 75.0
    with pytest.raises(MooncakeError, match="no port rate for RDMA device 'mlx5_9'"):
        line_rate_gbps(["mlx5_9"], tmp_path)


def _fake_bench(tmp_path: Path, output: str, exit_code: int) -> Path:
    binary = tmp_path / "transfer_engine_bench"
    binary.write_text(f"#!/bin/sh\necho '{output}'\nexit {exit_code}\n")
    binary.chmod(0o755)
    return binary


@pytest.mark.parametrize(("output", "exit_code"), [
    ("transfer_engine_bench.cpp:429] FAILED", 1),
    ("transfer_engine_bench.cpp:429] FAILED", 0),
    ("Segment 127.0.0.1:12345 not found", 2),
])
def test_a_failed_initiator_is_an_error_with_its_log_tail(tmp_path: Path, output: str, exit_code: int) -> None:
    master = MasterHandle(HostPort("127.0.0.1", 1), "http://127.0.0.1:2/metadata", "http://127.0.0.1:3",
                          spawned=True, protocol="tcp", lease_ttl=1.0, client_ttl=5.0)
    with pytest.raises(MooncakeError, match=rf"read 65536 B failed \(exit {exit_code}\)") as failure:
        run_initiator(master, _fake_bench(tmp_path, output, exit_code), tmp_path, operation="read",
                      block_size=65536, buffer_size=1 << 24, port=12400)
    assert output in str(failure.value)
    assert "threads x batch_size" in str(failure.value)


def test_a_completed_initiator_gives_its_throughput(tmp_path: Path) -> None:
    master = MasterHandle(HostPort("127.0.0.1", 1), "http://127.0.0.1:2/metadata", "http://127.0.0.1:3",
                          spawned=True, protocol="tcp", lease_ttl=1.0, client_ttl=5.0)
    line = "Test completed: duration 2.00, batch count 10, throughput 0.50 GB/s"
    result = run_initiator(master, _fake_bench(tmp_path, line, 0), tmp_path, operation="write",
                           block_size=1 << 20, buffer_size=1 << 28, port=12400)
    assert (result.operation, result.batches, result.gbps) == ("write", 10, pytest.approx(0.5))
