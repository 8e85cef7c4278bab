"""Keras backend: the FP32 deployment graphs, each wrapped once in a tf.function with a fixed signature."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from s2s_qat.models import Seq2SeqCore, build_decoder_step, build_encoder


class KerasBackend:
    def __init__(self, core: Seq2SeqCore, reference: bool = False):
        cfg = core.cfg
        self.source_length, self.target_length = cfg.source_length, cfg.target_length
        self.encoder = build_encoder(core, reference=reference)
        self.decoder_step = build_decoder_step(core, reference=reference)
        s, t, d = cfg.source_length, cfg.target_length, cfg.d_model
        ids_s = tf.TensorSpec((1, s), tf.int32)
        ids_t = tf.TensorSpec((1, t), tf.int32)
        self._encode = tf.function(
            lambda i, m: self.encoder({"input_ids": i, "attention_mask": m})["encoder_hidden_states"],
            input_signature=[ids_s, ids_s])
        self._step = tf.function(
            lambda i, m, h, em: self.decoder_step({"decoder_input_ids": i, "decoder_attention_mask": m,
                                                   "encoder_hidden_states": h, "encoder_attention_mask": em})["logits"],
            input_signature=[ids_t, ids_t, tf.TensorSpec((1, s, d), tf.float32), ids_s])
        rows_s, rows_t = tf.TensorSpec((None, s), tf.int32), tf.TensorSpec((None, t), tf.int32)
        self._encode_rows = tf.function(self._encode.python_function, input_signature=[rows_s, rows_s])
        self._step_rows = tf.function(self._step.python_function,
                                      input_signature=[rows_t, rows_t, tf.TensorSpec((None, s, d), tf.float32), rows_s])

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tf.Tensor:
        return self._encode(input_ids, attention_mask)

    def decode_step(self, decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask) -> np.ndarray:
        return self._step(decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask).numpy()[0]

    def encode_rows(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> tf.Tensor:
        """`encode` for [B, S] rows (the same graph under a batch-free signature)."""
        return self._encode_rows(input_ids, attention_mask)

    def decode_step_rows(self, decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask
                         ) -> np.ndarray:
        """`decode_step` for B rows: [B, V] logits."""
        return self._step_rows(decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask).numpy()
