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
