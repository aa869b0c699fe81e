"""Fixtures of the measurement-engine tests: one known-delay test double per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_mooncake.serving import ClientConfig

from .fake_openai_server import FakeOpenAIServer


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(ttft=0.1, itl=0.02, tokens=5, cached=3) as server:
        yield server


@pytest.fixture
def config(fake_server: FakeOpenAIServer) -> ClientConfig:
    return ClientConfig(fake_server.base_url, fake_server.model, request_timeout_s=5.0)
