"""Prompts exact in tokens: the endpoint's /tokenize, or the served model's tokenizer file."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.endpoints.tokens import TokenPool, local_tokenizer, tokenizer_for
from pytest_mooncake.errors import MooncakeError

UNREACHABLE = Endpoint("http://127.0.0.1:9/v1", "m", spawned=False, label="nowhere")


def write_tokenizer(directory: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"[UNK]": 0, "def": 1, "return": 2, "self": 3}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def test_a_model_directory_or_its_file_tokenizes_without_the_endpoint(tmp_path: Path) -> None:
    directory = write_tokenizer(tmp_path)
    for given in (directory, directory / "tokenizer.json"):
        assert local_tokenizer(given)("def f(self): return self") == [1, 0, 0, 3, 0, 2, 3]
    # The local tokenizer wins: the unreachable endpoint is never asked.
    pool = TokenPool.from_tokenizer(tokenizer_for(UNREACHABLE, directory), min_tokens=10_000)
    assert len(pool.ids) >= 10_000 and set(pool.ids) <= {0, 1, 2, 3}


def test_missing_or_broken_tokenizer_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(MooncakeError, match="no tokenizer file at .*tokenizer.json; give the served model's"):
        local_tokenizer(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MooncakeError, match="is not a tokenizers file"):
        local_tokenizer(tmp_path / "bad.json")


def test_without_a_local_tokenizer_the_endpoint_is_asked() -> None:
    with pytest.raises(MooncakeError, match="/tokenize failed"):
        tokenizer_for(UNREACHABLE, None)("def")


def test_doctor_says_when_prompts_cannot_be_cut_and_how_to_fix_it(tmp_path: Path) -> None:
    from pytest_mooncake.config.options import MooncakeConfig
    from pytest_mooncake.harness.doctor import _tokenizer_check

    from .serving.fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:  # a proxy-like endpoint: /v1/* but no /tokenize
        missing = _tokenizer_check(MooncakeConfig.from_defaults(openai_base_url=server.base_url), server.base_url, {})
    assert not missing.ok and "HTTP 404" in missing.detail and "--mooncake-tokenizer" in missing.fix
    given = _tokenizer_check(MooncakeConfig.from_defaults(tokenizer=write_tokenizer(tmp_path)), "http://127.0.0.1:9/v1", {})
    assert given.ok, given.line()
