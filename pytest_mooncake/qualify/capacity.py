"""Capacity math of the Mooncake design (seed 003, §1.1.1 and §1.2.1).

KV bytes per token = layers x 2 (K and V) x KV heads x head_dim x dtype bytes, which is the
design's ``l x 2 x (d / gqa) x s`` whenever ``head_dim = d / heads``. LLaMA3-70B:
80 x 2 x 1024 x 2 = 327,680 bytes; the design's "320 KB" and "40 GB at 128K tokens" are
binary units (320 KiB, 40 GiB at 131,072 tokens).

Prefill FLOPs for n tokens = l x (a n^2 d + b n d^2), the design's formula and constants:

- a = 4: attention computes Q·Kᵀ (n x n x d multiply-adds) and scores·V (as many again), at
  2 FLOPs per multiply-add, with no saving for the causal mask.
- b = 22: every token goes through the layer's weight matrices (Q/K/V/O projections and the
  MLP), about 11 d^2 weights per layer, 2 FLOPs each. The design keeps it as one constant
  rather than counting each model's matrices, and so do we, to reproduce its figures.

Reusing a p-token prefix beats recomputing it when loading its KV takes less time than the
FLOPs it saves: ``kv_bytes(p) / B < prefill_flops(p) / G``, i.e. the design's
``B / G > 2 d s / (gqa (a p d + b d^2))``. G is the GPUs' dense bf16 peak, with no MFU
discount: that is what reproduces the design's ~6 GB/s (8xA800) and ~19 GB/s (8xH800) at
8,192 tokens. Real prefill reaches only part of the peak, so measured break-evens sit
lower; ``Gpu.efficiency`` models that when wanted. Bandwidths are in bytes/s (decimal GB/s
when divided by 1e9, as the design quotes them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MODELS", "break_even_bandwidth"]

ATTENTION_COEFFICIENT = 4  # "a" of seed 003
LINEAR_COEFFICIENT = 22  # "b" of seed 003

_DTYPE_BYTES = {"float32": 4, "float": 4, "float16": 2, "half": 2, "bfloat16": 2, "float8": 1, "fp8": 1, "int8": 1}


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer that decide KV size and prefill cost."""

    layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    dtype_bytes: int = 2

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """Read a Hugging Face ``config.json`` dict (Llama/Qwen style keys)."""
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            return cls(
                layers=int(config["num_hidden_layers"]),
                hidden_size=hidden,
                num_attention_heads=heads,
                # Configs without GQA omit the key; head_dim is absent from older Llama configs.
                num_key_value_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                intermediate_size=int(config["intermediate_size"]),
                vocab_size=int(config["vocab_size"]),
                dtype_bytes=_dtype_bytes(config),
            )
        except KeyError as exc:
            raise ValueError(f"HF config lacks {exc.args[0]!r}; it needs num_hidden_layers, hidden_size, "
                             "num_attention_heads, intermediate_size and vocab_size") from None

    @property
    def gqa(self) -> float:
        """Query heads per KV head (the design's GQA ratio)."""
        return self.num_attention_heads / self.num_key_value_heads

    @property
    def kv_bytes_per_token(self) -> int:
        return self.layers * 2 * self.num_key_value_heads * self.head_dim * self.dtype_bytes

    def kv_bytes(self, tokens: int) -> int:
        return tokens * self.kv_bytes_per_token

    def prefill_flops(self, tokens: int) -> float:
        d = self.hidden_size
        return float(self.layers * (ATTENTION_COEFFICIENT * tokens**2 * d + LINEAR_COEFFICIENT * tokens * d**2))


def _dtype_bytes(config: Mapping[str, Any]) -> int:
    # Newer transformers write "dtype", older ones "torch_dtype"; both may carry a "torch." prefix.
    raw = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    name = raw.removeprefix("torch.")
    if name not in _DTYPE_BYTES:
        raise ValueError(f"HF config dtype {raw!r} is not one of {', '.join(_DTYPE_BYTES)}; "
                         "pass dtype_bytes explicitly with dataclasses.replace(shape, dtype_bytes=...)")
    return _DTYPE_BYTES[name]


MODELS: dict[str, ModelShape] = {
    "llama3-70b": ModelShape(80, 8192, 64, 8, 128, 28672, 128256),
    "llama-3.1-8b": ModelShape(32, 4096, 32, 8, 128, 14336, 128256),
    "qwen2.5-32b": ModelShape(64, 5120, 40, 8, 128, 27648, 152064),
    "qwen2.5-72b": ModelShape(80, 8192, 64, 8, 128, 29568, 152064),
    # The 5M-parameter model the CPU CI serves (pytest_mooncake.endpoints.model.LlamaShape defaults).
    "ci-tiny-llama": ModelShape(4, 256, 4, 2, 64, 688, 8192, dtype_bytes=4),
}


@dataclass(frozen=True)
class Gpu:
    """A GPU's dense bf16 peak and the fraction of it prefill reaches (1.0: the design's assumption)."""

    name: str
    dense_bf16_flops: float
    efficiency: float = 1.0

    @property
    def effective_flops(self) -> float:
        return self.dense_bf16_flops * self.efficiency


# Vendor datasheet dense (no sparsity) bf16 peaks; A800/H800 are the export variants of
# A100/H100 SXM with the same compute and reduced NVLink.
GPUS: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in (
        Gpu("A800", 312e12),
        Gpu("A100", 312e12),
        Gpu("H800", 989.4e12),
        Gpu("H100", 989.4e12),
        Gpu("H200", 989.4e12),
    )
}


def gpu_spec(gpu: Gpu | str) -> Gpu:
    if isinstance(gpu, Gpu):
        return gpu
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)} (or pass a capacity.Gpu(name, flops))")
    return GPUS[gpu]


def recompute_seconds(shape: ModelShape, tokens: int, gpu: Gpu | str, n_gpus: int = 1) -> float:
    """Time to prefill ``tokens`` from scratch on ``n_gpus`` GPUs at their effective FLOP/s."""
    return shape.prefill_flops(tokens) / (gpu_spec(gpu).effective_flops * n_gpus)


def min_load_bandwidth(shape: ModelShape, prefix_tokens: int, gpu: Gpu | str, n_gpus: int = 1) -> float:
    """Bytes/s of KV loading above which loading a ``prefix_tokens`` prefix beats recomputing it."""
    if prefix_tokens <= 0:
        raise ValueError(f"prefix_tokens must be positive, got {prefix_tokens}")
    return shape.kv_bytes(prefix_tokens) / recompute_seconds(shape, prefix_tokens, gpu, n_gpus)


# The name suites/transfer/test_bandwidth.py imports.
break_even_bandwidth = min_load_bandwidth


@dataclass(frozen=True)
class HitPrediction:
    """A cache hit's TTFT by the design's arithmetic, from figures measured in the same run."""

    compute_s: float  # the cold prefill time scaled to the FLOPs the uncached tail still needs
    load_s: float  # the cached tokens' KV over the measured store read bandwidth
    kv_bytes: int

    @property
    def ttft_s(self) -> float:
        return self.compute_s + self.load_s


def predict_hit(shape: ModelShape, prompt_tokens: int, cached_tokens: int, cold_ttft_s: float,
                read_bytes_per_s: float) -> HitPrediction:
    """Reusing ``cached_tokens`` of a ``prompt_tokens`` prompt whose cold prefill took ``cold_ttft_s``.

    Attention makes prefill cost superlinear, so the tail is what ``prefill_flops`` of the whole
    prompt exceeds that of the cached prefix, not a token-count share. Fixed costs (HTTP,
    scheduling, the connector's lookup) are not modelled: a measured TTFT far above the
    prediction points at them.
    """
    if not 0 <= cached_tokens <= prompt_tokens or prompt_tokens <= 0 or read_bytes_per_s <= 0:
        raise ValueError(f"need 0 <= cached ({cached_tokens}) <= prompt ({prompt_tokens}) tokens and a bandwidth > 0 "
                         f"(got {read_bytes_per_s})")
    share = 1.0 - shape.prefill_flops(cached_tokens) / shape.prefill_flops(prompt_tokens)
    kv = shape.kv_bytes(cached_tokens)
    return HitPrediction(cold_ttft_s * share, kv / read_bytes_per_s, kv)
