"""Shared tiny-model harness: tiny configs, a tiny tokenizer, deterministic inputs and tolerances."""
from __future__ import annotations

import dataclasses

import numpy as np
import tf_keras

from s2s_qat.models import Seq2SeqCore, TransformerConfig, build_core, teacher_forced_logits

# Tolerances in one place (float32 graphs).
STEP_VS_TEACHER_FORCED_ATOL = 1e-5
REFERENCE_VS_DEPLOYMENT_ATOL = 1e-4

TINY = TransformerConfig(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, attention_heads=2,
                         ffn_dim=32, source_length=9, target_length=7, max_position_embeddings=9, dropout=0.0)

TINY_VARIANTS = {
    "marian_relu_post_ln": {},
    "bart_gelu_learned_lnemb": {"activation": "gelu", "position_embedding": "learned", "position_offset": 2,
                                "layernorm_embedding": True, "scale_embedding": False},
    "pre_ln_swish_untied": {"activation": "swish", "normalize_before": True, "tie_word_embeddings": False,
                            "final_logits_bias": False},
}


def tiny_core(seed: int = 0, **overrides) -> Seq2SeqCore:
    tf_keras.utils.set_random_seed(seed)
    core = build_core(dataclasses.replace(TINY, **overrides))
    # Random (non-zero) biases and LayerNorm parameters so every weight matters in parity tests.
    rng = np.random.default_rng(seed)
    for v in core.weights:
        if "bias" in v.name or "gamma" in v.name or "beta" in v.name:
            v.assign(v.numpy() + rng.normal(0, 0.1, v.shape).astype(np.float32))
    return core


def source_batch(cfg: TransformerConfig, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, S) right-padded random sources ending in EOS, with varied lengths."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, cfg.source_length), cfg.pad_token_id, np.int32)
    for i in range(n):
        length = int(rng.integers(2, cfg.source_length + 1))
        ids[i, : length - 1] = rng.integers(4, cfg.vocab_size, length - 1)
        ids[i, length - 1] = cfg.eos_token_id
    return ids, (ids != cfg.pad_token_id).astype(np.int32)


def reference_greedy(core: Seq2SeqCore, ids: np.ndarray, mask: np.ndarray, max_new: int) -> list[int]:
    """Greedy decoding the plain way: re-run the right-padded teacher-forced graph on the whole prefix."""
    cfg = core.cfg
    prefix = [cfg.bos_token_id]
    for _ in range(min(max_new, cfg.target_length)):
        dec = np.full((1, cfg.target_length), cfg.pad_token_id, np.int32)
        dec[0, : len(prefix)] = prefix
        dmask = np.zeros_like(dec)
        dmask[0, : len(prefix)] = 1
        logits = teacher_forced_logits(core, ids, mask, dec, dmask).numpy()[0, len(prefix) - 1]
        token = int(np.argmax(logits))
        prefix.append(token)
        if token == cfg.eos_token_id:
            break
    return prefix[1:]
