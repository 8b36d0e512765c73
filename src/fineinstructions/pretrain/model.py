"""Llama-style decoders by size name, built from a `transformers` config (so checkpoints load anywhere).

The paper trains 300M, 1.8B and 7B models with Lingua; their exact shapes were not published, so the large presets
use Lingua-like proportions (SwiGLU MLP ≈ 2.7× hidden, head dim 64–128, grouped-query attention) at those sizes.
`toy` is the CPU preset (~9M parameters at a vocabulary of 8k); `tiny` exists for tests.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "toy": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=6, num_attention_heads=4,
                num_key_value_heads=4),
    "300m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=20, num_attention_heads=16,
                 num_key_value_heads=8),
    "1.8b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8),
}


def model_config(preset: str, vocab_size: int, seq_len: int, eos_id: int | None = None, pad_id: int | None = None,
                 **overrides: Any):
    from transformers import LlamaConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}: choose one of {', '.join(PRESETS)}")
    shape = {**PRESETS[preset], **overrides}
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=seq_len, eos_token_id=eos_id,
                       pad_token_id=pad_id, bos_token_id=None, tie_word_embeddings=True, rope_theta=10000.0,
                       **shape)


def build_model(preset: str, vocab_size: int, seq_len: int, seed: int = 0, **kw: Any):
    """A freshly initialised model; the seed makes two arms start from the same weights when vocabularies match."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(model_config(preset, vocab_size, seq_len, **kw))


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
