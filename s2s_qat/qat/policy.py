"""The quantization policy: one table from (layer type, tensor kind) to a tfmot quantizer (DESIGN sections 3-5).

Every tensor that becomes int8 in TFLite is marked in the layers with `fq(kind, x, training)`; attaching a
`QuantState` makes those marks real fake-quantization ops:

    activation      MovingAverageQuantizer: asymmetric per-tensor, EMA of batch ranges (ranges first set from
                    calibration batches, see `calibrate`)
    weight          LastValueQuantizer: symmetric narrow-range per tensor (Linear kernels, the logits projection,
                    GATHER tables, LayerNorm gamma/beta, constants feeding element-wise ops)
    softmax         FixedQuantizer [0, 255/256]: scale 1/256, zero point -128, as TFLite's int8 SOFTMAX requires
    mask            FixedQuantizer [-mask_value, 0]: the bounded mask tables and every tensor derived from them,
                    one range, so GATHER and MINIMUM keep their scale exactly

A layer type or a tensor kind the table does not list fails with the layer's path and the kind.

Why no per-channel weights: TFLite has per-channel FULLY_CONNECTED kernels, but the TF 2.21 converter cannot produce
them from QAT graphs. A per-channel FakeQuant quantizes the last axis of the (in, out) kernel, the converter then
transposes that constant to FULLY_CONNECTED's (out, in) layout and fails with "'tfl.transpose' op has mismatched
quantized axes of input and output" (even for one plain 2-D MatMul). tfmot's own Dense uses per-tensor kernels for
the same reason. GATHER and element-wise ops have no per-channel int8 kernels at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras
from tensorflow_model_optimization.quantization.keras import quantizers

from s2s_qat.models.layers import Quantizable

SOFTMAX_RANGE = (0.0, 255.0 / 256.0)


@dataclass(frozen=True)
class QuantSpec:
    kind: str  # activation | weight | softmax | mask
    doc: str

    @property
    def is_activation(self) -> bool:
        return self.kind == "activation"

    @property
    def is_weight(self) -> bool:
        return self.kind == "weight"

    def make(self, mask_value: float):
        if self.kind == "activation":
            return quantizers.MovingAverageQuantizer(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)
        if self.kind == "weight":
            return quantizers.LastValueQuantizer(num_bits=8, per_axis=False, symmetric=True, narrow_range=True)
        if self.kind == "softmax":
            return quantizers.FixedQuantizer(num_bits=8, init_min=SOFTMAX_RANGE[0], init_max=SOFTMAX_RANGE[1],
                                             narrow_range=False)
        if self.kind == "mask":
            return quantizers.FixedQuantizer(num_bits=8, init_min=-float(mask_value), init_max=0.0, narrow_range=False)
        raise ValueError(f"unknown quantizer kind {self.kind!r}")


ACT = QuantSpec("activation", "asymmetric per-tensor, moving-average range")
WEIGHT = QuantSpec("weight", "symmetric narrow-range, per tensor")
SOFTMAX = QuantSpec("softmax", "fixed [0, 255/256]")
MASK = QuantSpec("mask", "fixed [-mask_value, 0]")

# Layer type -> tensor kind -> quantizer. Types with an empty dict have no int8 tensor of their own.
POLICY: dict[str, dict[str, QuantSpec]] = {
    "Linear": {"kernel": WEIGHT, "output": ACT},
    "LayerNorm": {"mean": ACT, "centered": ACT, "square": ACT, "variance": ACT, "eps": WEIGHT,
                  "variance_eps": ACT, "inv_std": ACT, "normalized": ACT, "gamma": WEIGHT, "scaled": ACT,
                  "beta": WEIGHT, "output": ACT},
    "Attention": {"scores": ACT, "masked_scores": ACT, "softmax": SOFTMAX, "context": ACT},
    "FeedForward": {"activation": ACT},
    "TokenEmbedding": {"table": WEIGHT},
    "PositionEmbedding": {"table": WEIGHT},
    "EncoderBlock": {"self_attn_residual": ACT, "ffn_residual": ACT},
    "DecoderBlock": {"self_attn_residual": ACT, "encoder_attn_residual": ACT, "ffn_residual": ACT},
    "Seq2SeqCore": {"embed": ACT, "mask": MASK, "logits_kernel": WEIGHT, "logits": ACT},
    "Dropout": {},
}


class PolicyError(ValueError):
    pass


def layer_path(layer) -> str:
    return getattr(layer, "_s2s_path", layer.name)


def spec_for(layer, kind: str, policy: dict = POLICY) -> QuantSpec:
    kinds = policy.get(type(layer).__name__)
    if kinds is None:
        raise PolicyError(f"layer {layer_path(layer)} ({type(layer).__name__}) is not in the quantization policy; "
                          f"listed layer types: {', '.join(sorted(policy))}")
    if kind not in kinds:
        listed = ", ".join(sorted(kinds)) or "none"
        raise PolicyError(f"tensor {kind!r} of layer {layer_path(layer)} ({type(layer).__name__}) is not in the "
                          f"quantization policy; listed for {type(layer).__name__}: {listed}")
    return kinds[kind]


@dataclass
class _Slot:
    path: str
    spec: QuantSpec
    quantizer: object
    weights: dict


class QuantState:
    """Quantizers of one model. `mode`: `quantize`, `calibrate` (record ranges, pass floats through) or `off`."""

    def __init__(self, mask_value: float, policy: dict = POLICY):
        self.mask_value, self.policy = mask_value, policy
        self.mode = "quantize"
        self.slots: dict[tuple[int, str], _Slot] = {}
        self.frozen = False  # after calibration: a new slot would be a variable created inside a traced graph

    def _slot(self, layer, kind: str, x) -> _Slot:
        key = (id(layer), kind)
        slot = self.slots.get(key)
        if slot is None:
            if self.frozen:
                raise PolicyError(f"tensor {kind!r} of layer {layer_path(layer)} was not seen during calibration")
            spec = spec_for(layer, kind, self.policy)
            quantizer = spec.make(self.mask_value)
            with tf.init_scope():
                weights = quantizer.build(x.shape, f"fq_{kind}", layer) or {}
            slot = self.slots[key] = _Slot(layer_path(layer), spec, quantizer, weights)
            if spec.is_activation:  # ranges start empty and grow with the calibration batches
                weights["min_var"].assign(0.0)
                weights["max_var"].assign(0.0)
        return slot

    def apply(self, layer, kind: str, x, training):
        if self.mode == "off":  # the same weights as a float model (the localization's float twin)
            return x
        slot = self._slot(layer, kind, x)
        if self.mode == "calibrate":
            if slot.spec.is_activation:
                w = slot.weights
                w["min_var"].assign(tf.minimum(w["min_var"], tf.reduce_min(x)))
                w["max_var"].assign(tf.maximum(w["max_var"], tf.reduce_max(x)))
            elif slot.spec.is_weight:
                slot.quantizer(x, training=True, weights=slot.weights)  # records the weight's range
            return x
        return slot.quantizer(x, training=bool(training), weights=slot.weights)


def _walk(layer, path: str):
    yield layer, path
    for child in layer._flatten_layers(include_self=False, recursive=False):
        yield from _walk(child, f"{path}/{child.name}")


def quantizable_layers(core: tf_keras.layers.Layer) -> list[tuple[tf_keras.layers.Layer, str]]:
    """Every layer of the model with its path (each once)."""
    seen, out = set(), []
    for layer, path in _walk(core, core.name):
        if id(layer) not in seen:
            seen.add(id(layer))
            out.append((layer, path))
    return out


def attach_quantization(core, policy: dict = POLICY) -> QuantState:
    """Attach one QuantState to every layer of `core` (built, FP32 weights loaded). Fails on a layer type the
    policy does not list, or a listed type that cannot mark its tensors."""
    state = QuantState(core.cfg.mask_value, policy)
    problems = []
    for layer, path in quantizable_layers(core):
        name = type(layer).__name__
        if name not in policy:
            problems.append(f"{path} ({name}) is not in the quantization policy")
        elif policy[name] and not isinstance(layer, Quantizable):
            problems.append(f"{path} ({name}) has int8 tensors in the policy but no fq hooks")
        object.__setattr__(layer, "_s2s_path", path)
        if isinstance(layer, Quantizable):
            object.__setattr__(layer, "quant_state", state)
    if problems:
        raise PolicyError("quantization policy does not cover the model:\n  " + "\n  ".join(problems))
    return state


def calibrate(core, state: QuantState, batches, run: Callable) -> int:
    """Set every range from calibration batches (all-values min/max of the float model), then freeze the set of
    quantizers. `run(core, batch)` runs a forward pass that reaches every marked tensor. Returns batches seen."""
    state.mode, n = "calibrate", 0
    try:
        for batch in batches:
            run(core, batch)
            n += 1
    finally:
        state.mode = "quantize"
    if n == 0:
        raise ValueError("QAT calibration got no batches")
    state.frozen = True
    return n


def range_table(state: QuantState) -> list[dict]:
    """Layer path, kind, quantizer and range (smallest min, largest max over channels) of every quantizer."""
    rows = []
    for (_, kind), slot in state.slots.items():
        row = {"layer": slot.path, "kind": kind, "quantizer": slot.spec.kind}
        if slot.weights:
            lo, hi = slot.weights["min_var"].numpy(), slot.weights["max_var"].numpy()
            row.update(min=float(np.min(lo)), max=float(np.max(hi)), channels=int(np.size(lo)))
        rows.append(row)
    return rows
