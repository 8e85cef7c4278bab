"""Graph builders: one function per graph kind, all calling the same `Seq2SeqCore` (shared variables).

Deployment graphs (batch 1, fixed lengths S and T):

encoder
    inputs   input_ids               int32   [1, S]   source pieces + EOS, right-padded with PAD
             attention_mask          int32   [1, S]   1 for real tokens, 0 for padding
    outputs  encoder_hidden_states   float32 [1, S, D]

decoder_step
    inputs   decoder_input_ids       int32   [1, T]   prefix BOS y1..yk, LEFT-padded: the newest token is last
             decoder_attention_mask  int32   [1, T]   0...0 1...1 (k+1 ones)
             encoder_hidden_states   float32 [1, S, D]
             encoder_attention_mask  int32   [1, S]
    outputs  logits                  float32 [1, V]   next-token logits after the last slot

Positions in the decoder step are derived from the mask (slot j has position j - (T - L)), so a prefix gives
the same numbers as the right-padded, teacher-forced training graph.

teacher_forced (training and evaluation, any batch)
    inputs   input_ids, attention_mask [B, S]; decoder_input_ids, decoder_attention_mask [B, T] (right-padded)
    outputs  logits float32 [B, T, V]
"""
from __future__ import annotations

import tensorflow as tf
import tf_keras

from s2s_qat.models.config import TransformerConfig
from s2s_qat.models.transformer import Seq2SeqCore, left_padded_positions

ENCODER_INPUTS = ("input_ids", "attention_mask")
ENCODER_OUTPUT = "encoder_hidden_states"
DECODER_INPUTS = ("decoder_input_ids", "decoder_attention_mask", "encoder_hidden_states", "encoder_attention_mask")
DECODER_OUTPUT = "logits"
DECODER_LAYOUT = "left_padded_prefix_last_slot"


def build_core(cfg: TransformerConfig) -> Seq2SeqCore:
    core = Seq2SeqCore(cfg)
    core.build_all()
    return core


def teacher_forced_logits(core: Seq2SeqCore, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                          training=False, reference=False):
    """(B, S) source, (B, T) right-padded decoder input -> (B, T, V) logits."""
    memory = core.encode(input_ids, attention_mask, training=training, reference=reference)
    return teacher_forced_decode(core, memory, attention_mask, decoder_input_ids, decoder_attention_mask,
                                 training=training, reference=reference)


def teacher_forced_decode(core: Seq2SeqCore, memory, attention_mask, decoder_input_ids, decoder_attention_mask,
                          training=False, reference=False):
    """Encoder states (B, S, D) and a right-padded decoder input (B, T) -> (B, T, V) logits."""
    t = decoder_input_ids.shape[1]
    positions = tf.range(t)[None, :] + tf.zeros_like(decoder_input_ids)
    hidden = core.decode(decoder_input_ids, decoder_attention_mask, positions, memory, attention_mask,
                         training=training, reference=reference)
    return core.logits(hidden, training=training)


class _EncoderGraph(tf_keras.layers.Layer):
    def __init__(self, core: Seq2SeqCore, reference: bool, **kwargs):
        super().__init__(**kwargs)
        self.core, self.reference = core, reference

    def call(self, inputs):
        return self.core.encode(inputs["input_ids"], inputs["attention_mask"], reference=self.reference)


class _DecoderStepGraph(tf_keras.layers.Layer):
    def __init__(self, core: Seq2SeqCore, reference: bool, **kwargs):
        super().__init__(**kwargs)
        self.core, self.reference = core, reference

    def call(self, inputs):
        ids, mask = inputs["decoder_input_ids"], inputs["decoder_attention_mask"]
        positions = left_padded_positions(mask, ids.shape[1])
        memory = inputs["encoder_hidden_states"]
        memory = memory if self.reference else self.core.boundary(memory)
        hidden = self.core.decode(ids, mask, positions, memory, inputs["encoder_attention_mask"],
                                  reference=self.reference)
        return self.core.logits(hidden[:, -1, :])  # (1, V): only the newest slot is projected


class _TeacherForcedGraph(tf_keras.layers.Layer):
    def __init__(self, core: Seq2SeqCore, reference: bool, **kwargs):
        super().__init__(**kwargs)
        self.core, self.reference = core, reference

    def call(self, inputs, training=False):
        return teacher_forced_logits(self.core, inputs["input_ids"], inputs["attention_mask"],
                                     inputs["decoder_input_ids"], inputs["decoder_attention_mask"],
                                     training=training, reference=self.reference)


def _named_output(x, name: str):
    return tf_keras.layers.Activation("linear", name=name)(x)


def build_encoder(core: Seq2SeqCore, reference: bool = False) -> tf_keras.Model:
    s = core.cfg.source_length
    inputs = {n: tf_keras.Input((s,), batch_size=1, dtype=tf.int32, name=n) for n in ENCODER_INPUTS}
    hidden = _EncoderGraph(core, reference, name="encoder_body")(inputs)
    suffix = "_reference" if reference else ""
    return tf_keras.Model(inputs, {ENCODER_OUTPUT: _named_output(hidden, ENCODER_OUTPUT)}, name="encoder" + suffix)


def build_decoder_step(core: Seq2SeqCore, reference: bool = False) -> tf_keras.Model:
    cfg = core.cfg
    s, t, d = cfg.source_length, cfg.target_length, cfg.d_model
    inputs = {
        "decoder_input_ids": tf_keras.Input((t,), batch_size=1, dtype=tf.int32, name="decoder_input_ids"),
        "decoder_attention_mask": tf_keras.Input((t,), batch_size=1, dtype=tf.int32, name="decoder_attention_mask"),
        "encoder_hidden_states": tf_keras.Input((s, d), batch_size=1, dtype=tf.float32, name="encoder_hidden_states"),
        "encoder_attention_mask": tf_keras.Input((s,), batch_size=1, dtype=tf.int32, name="encoder_attention_mask"),
    }
    logits = _DecoderStepGraph(core, reference, name="decoder_step_body")(inputs)
    suffix = "_reference" if reference else ""
    return tf_keras.Model(inputs, {DECODER_OUTPUT: _named_output(logits, DECODER_OUTPUT)}, name="decoder_step" + suffix)


def build_teacher_forced(core: Seq2SeqCore, reference: bool = False) -> tf_keras.Model:
    cfg = core.cfg
    shapes = {"input_ids": cfg.source_length, "attention_mask": cfg.source_length,
              "decoder_input_ids": cfg.target_length, "decoder_attention_mask": cfg.target_length}
    inputs = {n: tf_keras.Input((length,), dtype=tf.int32, name=n) for n, length in shapes.items()}
    logits = _TeacherForcedGraph(core, reference, name="teacher_forced_body")(inputs)
    return tf_keras.Model(inputs, {DECODER_OUTPUT: _named_output(logits, DECODER_OUTPUT)}, name="teacher_forced")
