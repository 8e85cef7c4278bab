"""Does the bounded mask act as -inf for this model? (DESIGN section 3: masked scores land on -mask_value)

The deployment graphs add -mask_value (20 by default) to masked attention scores instead of -1e9, so that the masked
scores stay on an int8 grid. That is exact only while every masked key scores far enough below the row's unmasked
keys: a masked key whose raw score is s ends at s - mask_value, and the softmax gives it weight when that is not far
below the unmasked scores. A model trained here learns with the bounded mask and adapts; an imported checkpoint was
trained with -inf, and its score range is whatever it is.

`mask_leak` runs the teacher-forced graph eagerly and records, for every attention row with both masked and unmasked
keys, r = logsumexp(masked raw scores) - logsumexp(unmasked raw scores). The softmax weight that reaches masked keys
is then sigmoid(r - mask_value) exactly; the mask value that keeps it under `tolerance` is r + log((1 - t) / t).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from s2s_qat.models import Seq2SeqCore, teacher_forced_logits
from s2s_qat.models.layers import Quantizable
from s2s_qat.qat.policy import quantizable_layers

DEFAULT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class MaskLeak:
    mask_value: float
    log_ratio: float  # max over attention rows of logsumexp(masked) - logsumexp(unmasked), raw scores
    layer: str  # the attention layer of that row

    @property
    def leak(self) -> float:
        """The largest softmax weight on masked keys of any attention row."""
        return 1.0 / (1.0 + math.exp(min(self.mask_value - self.log_ratio, 700.0)))

    def required_mask_value(self, tolerance: float = DEFAULT_TOLERANCE) -> float:
        return self.log_ratio + math.log((1.0 - tolerance) / tolerance)

    def message(self, tolerance: float = DEFAULT_TOLERANCE) -> str:
        return (f"model.mask_value {self.mask_value:g} leaks {self.leak:.1e} of the softmax weight to masked keys in "
                f"{self.layer} (tolerance {tolerance:.0e}); this model needs model.mask_value >= "
                f"{math.ceil(self.required_mask_value(tolerance))}")


def _lse(x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    x = np.where(keep, x.astype(np.float64), -np.inf)
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


class _ScoreRecorder:
    """Stands in for a QuantState on every layer: passes tensors through and reads each attention's raw and masked
    scores (the masked keys are where the bias is -mask_value)."""

    def __init__(self, mask_value: float):
        self.mask_value = mask_value
        self.raw: dict[int, np.ndarray] = {}
        self.worst = (-math.inf, "")
        self.query_masks: dict[str, np.ndarray] = {}  # "encoder" / "decoder" -> (B, L) of the current batch

    def apply(self, layer, kind, x, training):
        if kind == "scores":
            self.raw[id(layer)] = x.numpy()
        elif kind == "masked_scores":
            raw = self.raw.pop(id(layer))  # (B, H, Lq, Lk)
            masked = (x.numpy() - raw) < -0.5 * self.mask_value
            path = getattr(layer, "_s2s_path", layer.name)
            queries = self.query_masks["decoder" if "decoder_layer" in path else "encoder"][:, None, :] > 0
            rows = masked.any(axis=-1) & ~masked.all(axis=-1) & queries  # real queries only: padding rows are unused
            if rows.any():
                ratio = (_lse(raw, masked) - _lse(raw, ~masked))[rows].max()
                if ratio > self.worst[0]:
                    self.worst = (float(ratio), path)
        return x


def mask_leak(core: Seq2SeqCore, batches) -> MaskLeak:
    """The bounded mask's leak over `batches` of (input_ids, attention_mask, decoder_input_ids,
    decoder_attention_mask) on an FP32 core (no quantization attached), at real (unpadded) query positions."""
    layers = [layer for layer, _ in quantizable_layers(core) if isinstance(layer, Quantizable)]
    if any(layer.quant_state is not None for layer in layers):
        raise ValueError("mask_leak measures an FP32 model; this one has quantization attached")
    recorder = _ScoreRecorder(core.cfg.mask_value)
    for layer, path in quantizable_layers(core):
        object.__setattr__(layer, "_s2s_path", path)
    for layer in layers:
        object.__setattr__(layer, "quant_state", recorder)
    try:
        for ids, mask, dec, dec_mask in batches:
            recorder.query_masks = {"encoder": np.asarray(mask), "decoder": np.asarray(dec_mask)}
            teacher_forced_logits(core, tf.constant(ids), tf.constant(mask), tf.constant(dec), tf.constant(dec_mask))
    finally:
        for layer in layers:
            object.__setattr__(layer, "quant_state", None)
    return MaskLeak(core.cfg.mask_value, recorder.worst[0], recorder.worst[1])
