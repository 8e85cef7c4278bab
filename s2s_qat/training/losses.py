"""Token-level losses over right-padded label tensors."""
from __future__ import annotations

import tensorflow as tf


def label_smoothed_nll(logits, labels, label_mask, smoothing: float):
    """Mean over real tokens of (1 - e) * NLL + e * mean_v(-log p_v) (fairseq's uniform smoothing).

    logits (B, T, V) float32, labels (B, T) int32, label_mask (B, T) float32 -> (loss, token count).
    """
    logp = tf.nn.log_softmax(logits, axis=-1)
    nll = -tf.gather(logp, labels, axis=-1, batch_dims=2)
    loss = nll if smoothing == 0.0 else (1.0 - smoothing) * nll - smoothing * tf.reduce_mean(logp, axis=-1)
    tokens = tf.reduce_sum(label_mask)
    return tf.reduce_sum(loss * label_mask) / tf.maximum(tokens, 1.0), tokens


def distill_kl(student_logits, teacher_logits, label_mask, temperature: float):
    """T^2 * mean over real tokens of KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al.).

    The T^2 factor keeps the gradient scale of the soft term comparable to the cross-entropy's across T.
    """
    t = float(temperature)
    log_p_teacher = tf.nn.log_softmax(teacher_logits / t, axis=-1)
    log_p_student = tf.nn.log_softmax(student_logits / t, axis=-1)
    kl = tf.reduce_sum(tf.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)
    return t * t * tf.reduce_sum(kl * label_mask) / tf.maximum(tf.reduce_sum(label_mask), 1.0)


def masked_mse(a, b, mask):
    """Mean squared difference over the positions where mask (B, L) is 1 (the feature axis is averaged)."""
    per_position = tf.reduce_mean(tf.square(a - b), axis=-1)
    mask = tf.cast(mask, per_position.dtype)
    return tf.reduce_sum(per_position * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
