"""Model config mirroring the Hugging Face Marian/BART fields, plus the deployment lengths."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from s2s_qat.recipe import ModelConfig


@dataclass(frozen=True)
class TransformerConfig:
    vocab_size: int
    d_model: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 256
    activation: str = "relu"
    normalize_before: bool = False
    scale_embedding: bool = True
    position_embedding: str = "sinusoidal"
    position_offset: int = 0  # BART stores learned positions with an offset of 2
    max_position_embeddings: int = 64
    layernorm_embedding: bool = False
    tie_word_embeddings: bool = True
    final_logits_bias: bool = True
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.0
    mask_value: float = 20.0
    layernorm_variance: str = "mul"  # deployment LayerNorm: "mul" (MEAN of MUL squares) or "matmul" (BATCH_MATMUL)
    source_length: int = 32
    target_length: int = 48
    pad_token_id: int = 0
    bos_token_id: int = 1
    eos_token_id: int = 2

    @property
    def head_dim(self) -> int:
        return self.d_model // self.attention_heads

    @classmethod
    def from_recipe(cls, model: ModelConfig, vocab_size: int) -> "TransformerConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in dataclasses.asdict(model).items() if k in fields}
        kwargs["max_position_embeddings"] = max(model.source_length, model.target_length)
        return cls(vocab_size=vocab_size, **kwargs)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def load(cls, path: str | Path) -> "TransformerConfig":
        data = json.loads(Path(path).read_text())
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"{path}: unknown model config keys {unknown}")
        return cls(**data)
