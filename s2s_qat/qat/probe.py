"""Op by op: where do a QAT Keras model and its TFLite export disagree? (diagnosis of a failed parity check)

For every int8 op output of an exported graph, the fake-quantized Keras tensor of the same layer and shape is put on
the TFLite tensor's own (scale, zero point) grid and compared in integer steps: the share of elements that differ
and the largest difference. Integer kernels round differently from fake quantization, so a few one-step
differences appear at every requantizing op; a share that jumps at one op is where parity is lost. The shares are
accumulated (an op inherits its inputs' differences), read them in execution order.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from s2s_qat.qat.policy import QuantState, layer_path

LAYOUT_OPS = ("RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "GATHER")  # move values; their layouts differ from Keras'


def encoder_captures(core, input_ids: np.ndarray, attention_mask: np.ndarray) -> list[tuple[str, str, np.ndarray]]:
    """(layer path, tensor kind, value) of every fake-quantized tensor of one eager encoder pass."""
    captured = []
    original = QuantState.apply

    def apply(self, layer, kind, x, training):
        y = original(self, layer, kind, x, training)
        captured.append((layer_path(layer), kind, np.asarray(y)))
        return y

    QuantState.apply = apply
    try:
        core.encode(tf.constant(input_ids), tf.constant(attention_mask))
    finally:
        QuantState.apply = original
    return captured


def step_differences(blob: bytes, input_ids: np.ndarray, attention_mask: np.ndarray,
                     captured: list[tuple[str, str, np.ndarray]]) -> list[dict]:
    """One row per int8 compute op of the encoder export, in execution order, with its best-matching capture."""
    it = Interpreter(model_content=blob, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    runner = it.get_signature_runner("serving_default")
    runner(input_ids=input_ids.astype(np.int32), attention_mask=attention_mask.astype(np.int32))
    details = {d["index"]: d for d in it.get_tensor_details()}
    rows = []
    for op in it._get_ops_details():  # noqa: SLF001 - the public API has no op graph
        d = details[op["outputs"][0]]
        if d["dtype"] != np.int8 or op["op_name"] in LAYOUT_OPS:
            continue
        name = d["name"].split(";")[0]
        scale, zp = d["quantization"]
        q = it.get_tensor(d["index"]).astype(np.int32)
        best = None
        for path, kind, value in captured:
            inner = path.split("/", 1)[1] if "/" in path else path
            if inner not in name or value.shape != q.shape:
                continue
            diff = np.abs(np.clip(np.round(value / scale) + zp, -128, 127).astype(np.int32) - q)
            row = {"op": op["op_name"], "tensor": name, "keras": f"{path}:{kind}", "differ": float(np.mean(diff > 0)),
                   "max_steps": int(diff.max())}
            if best is None or row["differ"] < best["differ"]:
                best = row
        if best is not None:
            rows.append(best)
    return rows
