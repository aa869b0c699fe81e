"""Prompts exact in tokens, built from real token ids of the server's own tokenizer.

We tokenize a text corpus once with the server's ``/tokenize`` and slice prompts out of
the resulting ids, sent as token-id prompts to ``/v1/completions``; a prompt of N tokens is
then exactly N tokens, whatever the tokenizer does with text. A salt prefix, tokenized the
same way, makes prompts of different runs share nothing.
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import MooncakeError
from .server import Endpoint

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
            "Prompts must be exact in tokens; this endpoint needs vLLM's /tokenize (or an OpenAI-compatible "
            "server that has it)."
        )
    return list(json.loads(response.body)["tokens"])


@dataclass(frozen=True)
class TokenPool:
    """Real token ids to cut prompts from; long enough for the longest prompt."""

    ids: tuple[int, ...]

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, min_tokens: int) -> TokenPool:
        text = corpus_text()
        ids = tokenize(endpoint, text)
        if not ids:
            raise MooncakeError(f"{endpoint.root_url}/tokenize returned no tokens for the corpus")
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
