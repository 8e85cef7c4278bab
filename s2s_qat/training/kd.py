"""Knowledge distillation from an FP32 teacher on teacher-forced batches (QAT and students share it)."""
from __future__ import annotations

import tensorflow as tf

from s2s_qat.models import Seq2SeqCore
from s2s_qat.models.graphs import teacher_forced_decode
from s2s_qat.training.losses import distill_kl, label_smoothed_nll, masked_mse


def _run(core: Seq2SeqCore, batch: dict, training: bool, tap: bool):
    """(encoder output, logits, cross-attention outputs of every decoder layer when `tap`)."""
    memory = core.encode(batch["input_ids"], batch["attention_mask"], training=training)
    taps = []
    if tap:
        for block in core.decoder_blocks:
            object.__setattr__(block, "taps", taps)
    try:
        logits = teacher_forced_decode(core, memory, batch["attention_mask"], batch["decoder_input_ids"],
                                       batch["decoder_attention_mask"], training=training)
    finally:
        for block in core.decoder_blocks:
            object.__setattr__(block, "taps", None)
    return memory, logits, taps


def kd_loss(teacher: Seq2SeqCore, *, word_weight: float, temperature: float, label_smoothing: float = 0.0,
            encoder_mse_weight: float = 0.0, cross_attention_mse_weight: float = 0.0, projection=None):
    """(1 - w) * CE + w * T^2 KL(teacher || student) [+ encoder MSE] [+ cross-attention MSE], all on the same
    teacher-forced batch; the teacher runs without gradient.

    `projection` (a callable, e.g. a learned Linear) maps the student's encoder output to the teacher's width
    before the encoder MSE; the cross-attention MSE needs the same width and layer count in both models.
    """
    tap = cross_attention_mse_weight > 0

    def loss(core: Seq2SeqCore, batch: dict, training: bool) -> tf.Tensor:
        mem_s, logits_s, taps_s = _run(core, batch, training, tap)
        mem_t, logits_t, taps_t = _run(teacher, batch, False, tap)
        mem_t, logits_t = tf.stop_gradient(mem_t), tf.stop_gradient(logits_t)
        total = (1.0 - word_weight) * label_smoothed_nll(logits_s, batch["labels"], batch["label_mask"],
                                                         label_smoothing)[0]
        if word_weight > 0:
            total += word_weight * distill_kl(logits_s, logits_t, batch["label_mask"], temperature)
        if encoder_mse_weight > 0:
            projected = projection(mem_s) if projection is not None else mem_s
            total += encoder_mse_weight * masked_mse(projected, mem_t, batch["attention_mask"])
        if tap:
            per_layer = [masked_mse(a, tf.stop_gradient(b), batch["decoder_attention_mask"])
                         for a, b in zip(taps_s, taps_t)]
            total += cross_attention_mse_weight * tf.add_n(per_layer) / len(per_layer)
        return total

    return loss
