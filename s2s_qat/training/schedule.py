"""Learning-rate schedules: linear warm-up, then inverse square root, cosine decay or constant."""
from __future__ import annotations

import math

import tensorflow as tf
import tf_keras


class WarmupSchedule(tf_keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, peak: float, warmup_steps: int, kind: str, total_steps: int):
        self.peak, self.warmup, self.kind, self.total = peak, warmup_steps, kind, total_steps

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + 1.0
        warm = float(max(self.warmup, 1))
        ramp = tf.minimum(step / warm, 1.0)
        if self.kind == "inverse_sqrt":
            decay = tf.minimum(1.0, tf.math.rsqrt(step / warm))
        elif self.kind == "cosine":
            frac = tf.clip_by_value((step - warm) / max(self.total - warm, 1.0), 0.0, 1.0)
            decay = 0.5 * (1.0 + tf.cos(math.pi * frac))
        else:
            decay = tf.constant(1.0)
        return self.peak * ramp * decay

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup, "kind": self.kind, "total_steps": self.total}
