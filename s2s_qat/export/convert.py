"""TFLite conversion of one deployment graph in one numeric mode.

Modes: `float` (FP32), `dynamic` (dynamic-range: int8 weights, float activations), `int8` (full-INT8 PTQ:
TFLITE_BUILTINS_INT8, int8 activations, int8 float-typed inputs/outputs, int32 ids and masks untouched),
`int16x8` (int16 activations, int8 weights; float I/O), `qat` (a graph carrying fake-quantization ops, converted
to full-INT8 from its own ranges; a representative dataset is optional and only fills tensors without a range).
"""
from __future__ import annotations

from typing import Callable, Iterable

import tensorflow as tf
import tf_keras

MODES = ("float", "dynamic", "int8", "int16x8", "qat")
Representative = Callable[[], Iterable[dict]]


def _concrete_function(model: tf_keras.Model):
    specs = [tf.TensorSpec(t.shape, t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    names = [s.name for s in specs]

    @tf.function(input_signature=specs)
    def serve(*args):
        return model(dict(zip(names, args)))

    return serve.get_concrete_function()


def make_converter(model: tf_keras.Model, mode: str, representative: Representative | None = None):
    """The configured TFLiteConverter for one graph and mode (also what the QuantizationDebugger re-runs)."""
    if mode not in MODES:
        raise ValueError(f"export mode {mode!r} is not supported; allowed: {', '.join(MODES)}")
    if mode in ("int8", "int16x8") and representative is None:
        raise ValueError(f"export mode {mode!r} needs a representative (calibration) dataset")
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_concrete_function(model)], model)
    if mode != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode in ("int8", "qat"):
        if representative is not None:
            converter.representative_dataset = representative
        if mode == "int8":
            # Not for `qat`: with INT8-only ops and no representative dataset the converter's parameter check
            # (run before it looks at the graph) demands one. A QAT graph is full-INT8 through its own ranges, and
            # `inventory` proves it (0 float ops, 0 QUANTIZE/DEQUANTIZE).
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8   # applies to float inputs only (encoder_hidden_states)
        converter.inference_output_type = tf.int8
    elif mode == "int16x8":
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    return converter


def convert(model: tf_keras.Model, mode: str, representative: Representative | None = None) -> bytes:
    """Convert a deployment graph (`build_encoder` / `build_decoder_step`) to a .tflite flatbuffer."""
    return make_converter(model, mode, representative).convert()
