"""Encoder-decoder blocks and the shared core that every graph kind calls."""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras

from s2s_qat.models.config import TransformerConfig
from s2s_qat.models.layers import (Attention, FeedForward, LayerNorm, PositionEmbedding, Quantizable,
                                   TokenEmbedding, causal_bias, embed_scale, mask_bias)


def layer_norm(cfg: TransformerConfig, name: str) -> LayerNorm:
    return LayerNorm(cfg.layer_norm_eps, cfg.layernorm_variance, name=name)


class _Block(Quantizable):
    """Residual sub-layer wiring shared by encoder and decoder blocks (pre- or post-LayerNorm)."""

    def _sublayer(self, x, norm, fn, training, reference, role):
        h = norm(x, reference=reference, training=training) if self.pre else x
        y = self.dropout(fn(h), training=training)
        with tf.name_scope(f"{role}_residual"):  # a readable TFLite tensor name for localization
            x = self.fq(f"{role}_residual", x + y, training)
        return x if self.pre else norm(x, reference=reference, training=training)


class EncoderBlock(_Block):
    def __init__(self, cfg: TransformerConfig, **kwargs):
        super().__init__(**kwargs)
        self.pre = cfg.normalize_before
        self.self_attn = Attention(cfg.d_model, cfg.attention_heads, cfg.attention_dropout, name="self_attn")
        self.self_attn_layer_norm = layer_norm(cfg, "self_attn_layer_norm")
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.dropout, name="ffn")
        self.final_layer_norm = layer_norm(cfg, "final_layer_norm")
        self.dropout = tf_keras.layers.Dropout(cfg.dropout)

    def call(self, x, bias, training=False, reference=False):
        x = self._sublayer(x, self.self_attn_layer_norm, lambda h: self.self_attn(h, h, bias, training=training),
                           training, reference, "self_attn")
        return self._sublayer(x, self.final_layer_norm, lambda h: self.ffn(h, training=training), training, reference,
                              "ffn")


class DecoderBlock(_Block):
    def __init__(self, cfg: TransformerConfig, **kwargs):
        super().__init__(**kwargs)
        self.pre = cfg.normalize_before
        self.self_attn = Attention(cfg.d_model, cfg.attention_heads, cfg.attention_dropout, name="self_attn")
        self.self_attn_layer_norm = layer_norm(cfg, "self_attn_layer_norm")
        self.cross_attn = Attention(cfg.d_model, cfg.attention_heads, cfg.attention_dropout, name="encoder_attn")
        self.cross_attn_layer_norm = layer_norm(cfg, "encoder_attn_layer_norm")
        self.ffn = FeedForward(cfg.d_model, cfg.ffn_dim, cfg.activation, cfg.dropout, name="ffn")
        self.final_layer_norm = layer_norm(cfg, "final_layer_norm")
        self.dropout = tf_keras.layers.Dropout(cfg.dropout)

    # Set to a list by a distillation loss while it traces the graph: collects the cross-attention outputs.
    taps: list | None = None

    def _tap(self, x):
        if self.taps is not None:
            self.taps.append(x)
        return x

    def call(self, x, self_bias, memory, cross_bias, training=False, reference=False):
        x = self._sublayer(x, self.self_attn_layer_norm,
                           lambda h: self.self_attn(h, h, self_bias, training=training), training, reference,
                           "self_attn")
        x = self._sublayer(x, self.cross_attn_layer_norm,
                           lambda h: self._tap(self.cross_attn(h, memory, cross_bias, training=training)), training,
                           reference, "encoder_attn")
        return self._sublayer(x, self.final_layer_norm, lambda h: self.ffn(h, training=training), training, reference,
                              "ffn")


class Seq2SeqCore(Quantizable):
    """All variables of the model. Graph builders call `encode`, `decode` and `logits`."""

    def __init__(self, cfg: TransformerConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", "seq2seq"), **kwargs)
        self.cfg = cfg
        self.embed_tokens = TokenEmbedding(cfg.vocab_size, cfg.d_model, name="shared")
        self.enc_positions = PositionEmbedding(cfg.position_embedding, cfg.max_position_embeddings, cfg.d_model,
                                               cfg.position_offset, name="encoder_positions")
        self.dec_positions = PositionEmbedding(cfg.position_embedding, cfg.max_position_embeddings, cfg.d_model,
                                               cfg.position_offset, name="decoder_positions")
        self.enc_layernorm_embedding = layer_norm(cfg, "encoder_layernorm_embedding") \
            if cfg.layernorm_embedding else None
        self.dec_layernorm_embedding = layer_norm(cfg, "decoder_layernorm_embedding") \
            if cfg.layernorm_embedding else None
        self.encoder_blocks = [EncoderBlock(cfg, name=f"encoder_layer_{i}") for i in range(cfg.encoder_layers)]
        self.decoder_blocks = [DecoderBlock(cfg, name=f"decoder_layer_{i}") for i in range(cfg.decoder_layers)]
        self.enc_final_norm = layer_norm(cfg, "encoder_layer_norm") if cfg.normalize_before else None
        self.dec_final_norm = layer_norm(cfg, "decoder_layer_norm") if cfg.normalize_before else None
        self.dropout = tf_keras.layers.Dropout(cfg.dropout)
        self.embed_scale = embed_scale(cfg)

    def build(self, input_shape=None):
        cfg = self.cfg
        if not cfg.tie_word_embeddings:
            self.lm_head = self.add_weight("lm_head", shape=(cfg.vocab_size, cfg.d_model),
                                           initializer=tf_keras.initializers.RandomNormal(stddev=cfg.d_model ** -0.5))
        if cfg.final_logits_bias:
            self.final_logits_bias = self.add_weight("final_logits_bias", shape=(cfg.vocab_size,), initializer="zeros")
        super().build(input_shape)

    def build_all(self) -> None:
        """Create every variable by running a dummy forward pass (so checkpoints can restore into it)."""
        s, t = 2, 2
        ids = tf.zeros((1, s), tf.int32)
        mask = tf.ones((1, s), tf.int32)
        h = self.encode(ids, mask)
        self.logits(self.decode(tf.zeros((1, t), tf.int32), tf.ones((1, t), tf.int32),
                                tf.zeros((1, t), tf.int32), h, mask))

    def _embed(self, ids, positions, pos_layer, ln, training, reference):
        x = self.embed_tokens(ids, scale=self.embed_scale, training=training)  # scale folded into the table
        with tf.name_scope("embed"):
            x = self.fq("embed", x + pos_layer(positions, training=training), training)
        if ln is not None:
            x = ln(x, reference=reference, training=training)
        return self.dropout(x, training=training)

    def _mask_fq(self, training):
        return lambda t: self.fq("mask", t, training)

    @property
    def encoder_output_layer(self) -> LayerNorm:
        """The LayerNorm whose output is `encoder_hidden_states` (its output range is the boundary's range)."""
        return self.enc_final_norm if self.enc_final_norm is not None else self.encoder_blocks[-1].final_layer_norm

    def boundary(self, encoder_hidden_states, training=False):
        """The decoder-step graph's memory input, marked with the encoder output's own quantizer, so both graphs
        carry one (scale, zero point) at the boundary and the encoder's int8 bytes pass through unchanged."""
        return self.encoder_output_layer.fq("output", encoder_hidden_states, training)

    def encode(self, input_ids, attention_mask, training=False, reference=False):
        """input_ids, attention_mask: (B, S) int32 -> encoder_hidden_states (B, S, D) float32."""
        if not self.built:
            self.build(None)
        s = input_ids.shape[1]
        x = self._embed(input_ids, tf.range(s)[None, :], self.enc_positions, self.enc_layernorm_embedding,
                        training, reference)
        bias = mask_bias(attention_mask, self.cfg.mask_value, reference, self._mask_fq(training))  # (B, S)
        for block in self.encoder_blocks:
            x = block(x, bias, training=training, reference=reference)
        if self.enc_final_norm is not None:
            x = self.enc_final_norm(x, reference=reference, training=training)
        return x

    def decode(self, decoder_input_ids, decoder_attention_mask, positions, encoder_hidden_states,
               encoder_attention_mask, training=False, reference=False):
        """(B, T) ids, mask and positions int32, memory (B, S, D) -> decoder hidden states (B, T, D)."""
        if not self.built:
            self.build(None)
        t = decoder_input_ids.shape[1]
        x = self._embed(decoder_input_ids, positions, self.dec_positions, self.dec_layernorm_embedding,
                        training, reference)
        fq = self._mask_fq(training)
        key_bias = mask_bias(decoder_attention_mask, self.cfg.mask_value, reference, fq)
        self_bias = causal_bias(key_bias, t, self.cfg.mask_value, reference, fq)  # (B, T, T)
        cross_bias = mask_bias(encoder_attention_mask, self.cfg.mask_value, reference, fq)  # (B, S)
        for block in self.decoder_blocks:
            x = block(x, self_bias, encoder_hidden_states, cross_bias, training=training, reference=reference)
        if self.dec_final_norm is not None:
            x = self.dec_final_norm(x, reference=reference, training=training)
        return x

    def logits(self, hidden, training=False):
        """(..., D) -> (..., V)."""
        table = self.embed_tokens.table if self.cfg.tie_word_embeddings else self.lm_head
        with tf.name_scope("logits"):
            # (D, V) like a Linear kernel, so the output-channel (per-channel) quantization axis is the last one.
            kernel = self.fq("logits_kernel", tf.transpose(table), training)
            if hidden.shape.rank > 2:
                out = tf.tensordot(hidden, kernel, axes=1)
            else:
                out = tf.matmul(hidden, kernel)
            return self.fq("logits", out + self.final_logits_bias if self.cfg.final_logits_bias else out, training)


def left_padded_positions(decoder_attention_mask, length: int):
    """Positions for a left-padded prefix: slot j holds position max(j - (T - L), 0), L = number of ones.

    A GATHER from a constant (T+1, T) table indexed by L, so everything stays int32.
    """
    table = np.maximum(np.arange(length)[None, :] - length + np.arange(length + 1)[:, None], 0).astype(np.int32)
    n = tf.reduce_sum(decoder_attention_mask, axis=1)  # (B,) int32
    return tf.gather(tf.constant(table), n)
