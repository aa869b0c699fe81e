"""A model directory vLLM can serve with ``--load-format dummy``: no weights to download.

We write a Hugging Face ``config.json`` of a real architecture (Llama) at any size and
train a byte-level BPE tokenizer locally on the Python standard library's sources, so
prompt lengths in tokens are real and exact. Random weights produce gibberish, which is
fine: the suites measure prefill time and cache reuse, not answers.
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

# The name vLLM serves our random-weight model under: its answers and its speed say nothing about a
# production model's, and an attached endpoint serving it is one of ours (a vLLM started by hand
# from this package), not a real model.
DUMMY_MODEL = "pytest-mooncake-tiny-llama"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class LlamaShape:
    """The dimensions of a Llama-architecture model (defaults: a 5M-parameter CPU model)."""

    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    vocab_size: int = 8192
    max_position_embeddings: int = 32768
    torch_dtype: str = "float32"


def hf_config(shape: LlamaShape) -> dict[str, object]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **asdict(shape),
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }


def _corpus() -> list[str]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return sorted(str(path) for path in stdlib.glob("*.py"))


def train_tokenizer(vocab_size: int, directory: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train(_corpus(), trainer)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "model_max_length": 1 << 20,
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )


def write_model_dir(directory: Path, shape: LlamaShape = LlamaShape()) -> Path:
    """Write config.json and a trained tokenizer into ``directory`` (reused when present)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = hf_config(shape)
    config_path = directory / "config.json"
    if config_path.exists() and json.loads(config_path.read_text()) == config and (directory / "tokenizer.json").exists():
        return directory
    train_tokenizer(shape.vocab_size, directory)
    config_path.write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0}))
    return directory
