"""Prompts exact in tokens, built from real token ids of the server's own tokenizer.

We tokenize a text corpus once with the server's ``/tokenize`` (or, for an endpoint without
it, such as a PD proxy, the served model's tokenizer given with ``--mooncake-tokenizer``) and
slice prompts out of the resulting ids, sent as token-id prompts to ``/v1/completions``; a
prompt of N tokens is then exactly N tokens, whatever the tokenizer does with text. A salt
prefix, tokenized the same way, makes prompts of different runs share nothing.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pytest_mooncake.endpoints.server import Endpoint
from pytest_mooncake.errors import MooncakeError

__all__ = ["Tokenize", "tokenizer_for"]

Tokenize = Callable[[str], list[int]]
_CORPUS_FILES = ("_pydecimal.py", "typing.py", "argparse.py", "inspect.py", "textwrap.py")


def corpus_text() -> str:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return "\n".join((stdlib / name).read_text("utf-8") for name in _CORPUS_FILES if (stdlib / name).exists())


def tokenize(endpoint: Endpoint, text: str, timeout: float = 120.0) -> list[int]:
    payload = {"model": endpoint.model, "prompt": text, "add_special_tokens": False}
    try:
        response = endpoint.post_json(endpoint.root_url + "/tokenize", payload, timeout)
    except OSError as exc:
        raise MooncakeError(f"POST {endpoint.root_url}/tokenize failed: {exc}") from None
    if response.status != 200:
        raise MooncakeError(
            f"{endpoint.root_url}/tokenize answered HTTP {response.status}: {response.body[:200]}. "
            "Prompts must be exact in tokens: point --mooncake-tokenizer at the served model's tokenizer.json "
            "(or its directory) when the endpoint has no vLLM-style /tokenize."
        )
    return list(json.loads(response.body)["tokens"])


def local_tokenizer(path: Path) -> Tokenize:
    """The ``tokenizers`` tokenizer in ``path`` (a tokenizer.json, or a model directory holding one)."""
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise MooncakeError(f"--mooncake-tokenizer {path}: no tokenizer file at {file}; give the served model's "
                            "tokenizer.json or the directory of its Hugging Face files")
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises its own exception type for a malformed file
        raise MooncakeError(f"--mooncake-tokenizer {file} is not a tokenizers file: {exc}") from None
    return lambda text: tokenizer.encode(text, add_special_tokens=False).ids


def tokenizer_for(endpoint: Endpoint, local: Path | None) -> Tokenize:
    """The served model's tokenizer: the local one when given, else the endpoint's ``/tokenize``."""
    if local is not None:
        return local_tokenizer(local)
    return lambda text: tokenize(endpoint, text)


@dataclass(frozen=True)
class TokenPool:
    """Real token ids to cut prompts from; long enough for the longest prompt."""

    ids: tuple[int, ...]

    @classmethod
    def from_tokenizer(cls, tokenize: Tokenize, min_tokens: int) -> TokenPool:
        ids = tokenize(corpus_text())
        if not ids:
            raise MooncakeError("the tokenizer returned no tokens for the corpus")
        repeats = -(-min_tokens // len(ids))
        return cls(tuple(ids * repeats))

    def prompt(self, salt: list[int], length: int, offset: int = 0) -> list[int]:
        """``salt`` then ids from ``offset``, exactly ``length`` tokens in all."""
        if length < len(salt):
            raise ValueError(f"a {length}-token prompt cannot hold a {len(salt)}-token salt")
        body = self.ids[offset : offset + length - len(salt)]
        if len(body) < length - len(salt):
            raise ValueError(f"the token pool holds {len(self.ids)} ids; {offset + length} needed")
        return [*salt, *body]
