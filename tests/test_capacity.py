"""Capacity math against the figures of the Mooncake design (seed 003 §1.1.1, §1.2.1)."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_mooncake.qualify.capacity import (
    GPUS,
    MODELS,
    Gpu,
    ModelShape,
    min_load_bandwidth,
    predict_hit,
    recompute_seconds,
)

KiB, GiB = 2**10, 2**30
LLAMA3_70B = MODELS["llama3-70b"]


def test_llama3_70b_kv_is_320_kib_per_token_and_40_gib_at_128k() -> None:
    # The design writes 320 KB and 40 GB; only binary units make both exact.
    assert LLAMA3_70B.kv_bytes_per_token == 320 * KiB
    assert LLAMA3_70B.kv_bytes(128 * 1024) == 40 * GiB
    assert LLAMA3_70B.kv_bytes_per_token != 320 * 1000


def test_kv_per_token_is_the_design_formula_for_every_preset() -> None:
    for name, shape in MODELS.items():
        d_over_gqa = shape.hidden_size / shape.gqa
        assert shape.kv_bytes_per_token == shape.layers * 2 * d_over_gqa * shape.dtype_bytes, name


def test_prefill_flops_is_l_times_a_n2_d_plus_b_n_d2() -> None:
    shape = dataclasses.replace(LLAMA3_70B, layers=2, hidden_size=10)
    assert shape.prefill_flops(3) == 2 * (4 * 3**2 * 10 + 22 * 3 * 10**2)


@pytest.mark.parametrize(("gpu", "design_gbps"), [("A800", 6.0), ("H800", 19.0)])
def test_break_even_at_8192_tokens_on_8_gpus_matches_the_design(gpu: str, design_gbps: float) -> None:
    gbps = min_load_bandwidth(LLAMA3_70B, 8192, gpu, n_gpus=8) / 1e9
    assert gbps == pytest.approx(design_gbps, rel=0.10)


def test_break_even_is_the_design_closed_form() -> None:
    d, s, gqa, p = LLAMA3_70B.hidden_size, LLAMA3_70B.dtype_bytes, LLAMA3_70B.gqa, 8192
    g = 8 * GPUS["H800"].dense_bf16_flops
    closed_form = g * 2 * d * s / (gqa * (4 * p * d + 22 * d**2))
    assert min_load_bandwidth(LLAMA3_70B, p, "H800", 8) == pytest.approx(closed_form, rel=1e-12)


def test_longer_prefixes_need_less_bandwidth_and_slower_gpus_need_less() -> None:
    short, long = (min_load_bandwidth(LLAMA3_70B, n, "H100") for n in (1024, 65536))
    assert long < short
    assert min_load_bandwidth(LLAMA3_70B, 8192, "A800") < min_load_bandwidth(LLAMA3_70B, 8192, "H800")


def test_efficiency_scales_recompute_time_and_break_even() -> None:
    half = Gpu("H100 at 50% MFU", GPUS["H100"].dense_bf16_flops, efficiency=0.5)
    shape = MODELS["llama-3.1-8b"]
    assert recompute_seconds(shape, 16384, half) == pytest.approx(2 * recompute_seconds(shape, 16384, "H100"))
    assert min_load_bandwidth(shape, 16384, half) == pytest.approx(min_load_bandwidth(shape, 16384, "H100") / 2)


def test_8b_on_one_h100_is_in_the_ballpark_of_the_measured_break_even() -> None:
    # docs/gpu-facts.md measured ~3.4 GB/s at 16-30k tokens. The model assumes peak FLOP/s,
    # which real prefill never reaches, so it must sit above the measurement but not far.
    measured = 3.4e9
    for tokens in (16384, 30000):
        modelled = min_load_bandwidth(MODELS["llama-3.1-8b"], tokens, "H100")
        assert measured < modelled < 2.5 * measured, tokens


def test_hf_config_is_read_like_the_presets() -> None:
    config = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 8,
              "intermediate_size": 14336, "vocab_size": 128256, "torch_dtype": "bfloat16"}
    assert ModelShape.from_hf_config(config) == MODELS["llama-3.1-8b"]
    tiny = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 64, "intermediate_size": 688, "vocab_size": 8192, "dtype": "float32"}
    assert ModelShape.from_hf_config(tiny) == MODELS["ci-tiny-llama"]
    assert MODELS["ci-tiny-llama"].kv_bytes_per_token == 4 * 2 * 2 * 64 * 4


def test_hf_config_without_gqa_key_means_one_kv_head_per_query_head() -> None:
    config = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4,
              "intermediate_size": 128, "vocab_size": 100, "torch_dtype": "torch.float16"}
    shape = ModelShape.from_hf_config(config)
    assert (shape.num_key_value_heads, shape.head_dim, shape.dtype_bytes, shape.gqa) == (4, 16, 2, 1.0)


def test_bad_inputs_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="lacks 'hidden_size'"):
        ModelShape.from_hf_config({"num_attention_heads": 4})
    config = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
              "vocab_size": 100, "torch_dtype": "complex64"}
    with pytest.raises(ValueError, match="dtype 'complex64' is not one of"):
        ModelShape.from_hf_config(config)
    with pytest.raises(ValueError, match="unknown GPU 'TPU'; known: A800"):
        min_load_bandwidth(LLAMA3_70B, 8192, "TPU")
    with pytest.raises(ValueError, match="prefix_tokens must be positive"):
        min_load_bandwidth(LLAMA3_70B, 0, "H100")


def test_an_explicit_head_dim_wins_and_the_default_dtype_is_bfloat16() -> None:
    # Qwen3 style: 16 heads of 128 in a 1024-wide model, so head_dim is not hidden_size / heads.
    config = {"num_hidden_layers": 28, "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 8,
              "head_dim": 128, "intermediate_size": 3072, "vocab_size": 151936}
    shape = ModelShape.from_hf_config(config)
    assert (shape.head_dim, shape.dtype_bytes) == (128, 2)
    assert shape.kv_bytes_per_token == 28 * 2 * 8 * 128 * 2


def test_bad_inputs_say_exactly_what_is_wrong() -> None:
    with pytest.raises(ValueError) as missing:
        ModelShape.from_hf_config({"num_attention_heads": 4})
    assert str(missing.value) == ("HF config lacks 'hidden_size'; it needs num_hidden_layers, hidden_size, "
                                  "num_attention_heads, intermediate_size and vocab_size")
    config = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "intermediate_size": 128,
              "vocab_size": 100, "dtype": "torch.complex64"}
    with pytest.raises(ValueError) as dtype:
        ModelShape.from_hf_config(config)
    assert str(dtype.value) == ("HF config dtype 'torch.complex64' is not one of float32, float, float16, half, bfloat16, "
                                "float8, fp8, int8; pass dtype_bytes explicitly with dataclasses.replace(shape, dtype_bytes=...)")
    with pytest.raises(ValueError) as gpu:
        recompute_seconds(LLAMA3_70B, 1, "TPU")
    assert str(gpu.value) == f"unknown GPU 'TPU'; known: {', '.join(GPUS)} (or pass a capacity.Gpu(name, flops))"


def test_one_gpu_by_default_and_a_one_token_prefix_is_valid() -> None:
    assert recompute_seconds(LLAMA3_70B, 8192, "H100") == recompute_seconds(LLAMA3_70B, 8192, "H100", 1)
    assert recompute_seconds(LLAMA3_70B, 8192, "H100", 8) == recompute_seconds(LLAMA3_70B, 8192, "H100") / 8
    assert min_load_bandwidth(LLAMA3_70B, 1, "H100") == LLAMA3_70B.kv_bytes(1) / recompute_seconds(LLAMA3_70B, 1, "H100")


def test_predict_hit_accepts_the_edges_of_its_inputs() -> None:
    """Nothing cached, a one-token prompt and a bandwidth under 1 byte/s are all valid inputs."""
    shape = ModelShape(2, 64, 4, 2, 16, 128, 100, dtype_bytes=2)  # KV: 2 layers x 2 x 2 heads x 16 x 2 = 256 bytes a token
    miss = predict_hit(shape, 512, 0, 2.0, 1e6)
    assert (miss.compute_s, miss.load_s, miss.kv_bytes) == (2.0, 0.0, 0)  # the whole cold prefill, nothing to load
    one = predict_hit(shape, 1, 1, 2.0, 1e6)
    assert (one.compute_s, one.kv_bytes) == (0.0, 256) and one.load_s == 256 / 1e6
    slow = predict_hit(shape, 1, 1, 2.0, 0.5)
    assert slow.load_s == 512.0  # 256 bytes at half a byte a second
