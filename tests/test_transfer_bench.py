"""Parsing transfer_engine_bench's result line."""

import pytest

from pytest_mooncake.transfer_bench import parse_result


def test_parses_the_result_line() -> None:
    line = "I1122 12:32:21.532260 14986 transfer_engine_bench.cpp:569] Test completed: duration 2.05, batch count 34, throughput 1.11 GB/s"
    assert parse_result(line) == (2.05, 34, pytest.approx(1.11e9))
    assert parse_result(line.replace("GB/s", "GiB/s"))[2] == pytest.approx(1.11 * 2**30)


def test_missing_or_odd_lines_are_errors() -> None:
    with pytest.raises(ValueError, match="no 'Test completed"):
        parse_result("transfer_engine_bench.cpp:429] FAILED")
    with pytest.raises(ValueError, match="unknown throughput unit"):
        parse_result("Test completed: duration 1, batch count 1, throughput 1 PB/s")
