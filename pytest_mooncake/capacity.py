"""Capacity math of the Mooncake design (seed 003, §1.1.1 and §1.2.1).

- KV bytes per token = layers x 2 (K and V) x (hidden / GQA ratio) x dtype bytes;
  LLaMA3-70B: 80 x 2 x 1024 x 2 = 320 KiB, so a 128k-token context holds 40 GiB.
- Prefill FLOPs for n tokens = l x (a n^2 d + b n d^2) with the design's constants a = 4
  (attention score and value products) and b = 22 (QKV/output projections and the MLP).
- Reusing a p-token prefix beats recomputing it when the KV load bandwidth B satisfies
  B / G > 2 d s / (gqa (a p d + b d^2)), G being the GPUs' FLOP/s. With peak dense bf16
  FLOP/s this reproduces the design's ~6 GB/s on 8xA800 and ~19 GB/s on 8xH800 at 8,192
  tokens. Real prefill reaches only part of peak, so measured break-evens sit lower
  (docs: ~3.4 GB/s measured for an 8B shape on one H100).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

A_ATTENTION = 4
B_LINEAR = 22
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8": 1, "fp8": 1}


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden_size: int
    attention_heads: int
    kv_heads: int
    dtype_bytes: int = 2

    @classmethod
    def from_hf_config(cls, config: dict[str, Any], name: str = "model") -> ModelShape:
        dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
        heads = int(config["num_attention_heads"])
        return cls(
            name,
            int(config["num_hidden_layers"]),
            int(config["hidden_size"]),
            heads,
            int(config.get("num_key_value_heads", heads)),
            _DTYPE_BYTES.get(dtype, 2),
        )

    @property
    def gqa(self) -> float:
        return self.attention_heads / self.kv_heads

    @property
    def kv_bytes_per_token(self) -> float:
        return self.layers * 2 * (self.hidden_size / self.gqa) * self.dtype_bytes

    def kv_bytes(self, tokens: int) -> float:
        return tokens * self.kv_bytes_per_token

    def prefill_flops(self, tokens: int) -> float:
        d = self.hidden_size
        return self.layers * (A_ATTENTION * tokens**2 * d + B_LINEAR * tokens * d**2)


MODELS = {
    shape.name: shape
    for shape in (
        ModelShape("llama3-70b", 80, 8192, 64, 8),
        ModelShape("llama-3.1-8b", 32, 4096, 32, 8),
        ModelShape("qwen2.5-32b", 64, 5120, 40, 8),
        ModelShape("qwen2.5-72b", 80, 8192, 64, 8),
        ModelShape("ci-tiny-llama", 4, 256, 4, 2, dtype_bytes=4),
    )
}
# Peak dense bf16 FLOP/s per GPU.
GPUS = {"A800": 312e12, "A100": 312e12, "H800": 989e12, "H100": 989e12, "H200": 989e12}


def break_even_bandwidth(shape: ModelShape, prefix_tokens: int, gpu: str, gpus: int = 1) -> float:
    """Bytes/s of KV load above which reusing a ``prefix_tokens`` prefix beats recomputing it."""
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    d, s = shape.hidden_size, shape.dtype_bytes
    bytes_per_flop = 2 * d * s / (shape.gqa * (A_ATTENTION * prefix_tokens * d + B_LINEAR * d**2))
    return bytes_per_flop * GPUS[gpu] * gpus


def need_ratio(measured_bytes_per_s: float, shape: ModelShape, prefix_tokens: int, gpu: str, gpus: int = 1) -> float:
    """How many times the break-even bandwidth a measured bandwidth is (>= 1: reuse pays)."""
    return measured_bytes_per_s / break_even_bandwidth(shape, prefix_tokens, gpu, gpus)
