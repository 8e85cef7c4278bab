"""Backends run the two deployment graphs one call at a time; the host loop owns generation."""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Seq2SeqBackend(Protocol):
    """What the host generation loop needs from a model.

    `encode` returns an opaque memory object passed back to `decode_step` unchanged (a tensor for Keras,
    int8 bytes for TFLite). `decode_step` takes a LEFT-padded prefix of length T and returns next-token
    logits as float32 [V]. A backend may also offer `decode_step_raw` (logits in the graph's own dtype, e.g.
    int8) with `dequantize_logits(raw)`; greedy decoding then takes the argmax of the raw values.
    """

    source_length: int
    target_length: int

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> Any: ...

    def decode_step(self, decoder_input_ids: np.ndarray, decoder_attention_mask: np.ndarray, memory: Any,
                    encoder_attention_mask: np.ndarray) -> np.ndarray: ...


def left_pad_prefix(prefix: list[int], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[1, T] ids and mask with `prefix` in the last len(prefix) slots."""
    if not 1 <= len(prefix) <= length:
        raise ValueError(f"decoder prefix of {len(prefix)} tokens does not fit the fixed length {length}")
    ids = np.full((1, length), pad_id, np.int32)
    mask = np.zeros((1, length), np.int32)
    ids[0, length - len(prefix):] = prefix
    mask[0, length - len(prefix):] = 1
    return ids, mask


def pad_source(ids: list[int], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """[1, S] right-padded ids and mask."""
    if len(ids) > length:
        raise ValueError(f"source of {len(ids)} tokens exceeds the fixed length {length}; encode with truncation")
    out = np.full((1, length), pad_id, np.int32)
    out[0, : len(ids)] = ids
    mask = np.zeros((1, length), np.int32)
    mask[0, : len(ids)] = 1
    return out, mask
