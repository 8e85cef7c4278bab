"""Op by op: where do a QAT Keras model and its TFLite export disagree? (diagnosis of a failed parity check)

For every int8 op output of an exported graph, the fake-quantized Keras tensor of the same layer and shape is put on
the TFLite tensor's own (scale, zero point) grid and compared in integer steps: the share of elements that differ
and the largest difference. Integer kernels round differently from fake quantization, so a few one-step
differences appear at every requantizing op; a share that jumps at one op is where parity is lost. The shares are
accumulated (an op inherits its inputs' differences), read them in execution order.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from s2s_qat.qat.policy import QuantState, layer_path
from s2s_qat.runtime.quantization import dequantize, quantize

LAYOUT_OPS = ("RESHAPE", "TRANSPOSE", "STRIDED_SLICE", "GATHER")  # move values; their layouts differ from Keras'


class HybridBackend:
    """The encoder of one backend and the decoder step of the other (a KerasBackend of a QAT model and a
    TFLiteBackend of its export, either way round), so a parity loss can be split between the two graphs. The
    boundary is exact: the Keras encoder output lies on the int8 boundary grid `contract` (the same quantizer)."""

    def __init__(self, encoder, decoder, contract):
        self.enc, self.dec, self.contract = encoder, decoder, contract
        self.source_length, self.target_length = encoder.source_length, encoder.target_length
        if hasattr(decoder, "decode_step_raw"):
            self.decode_step_raw, self.dequantize_logits = decoder.decode_step_raw, decoder.dequantize_logits

    def encode(self, input_ids, attention_mask):
        memory = self.enc.encode(input_ids, attention_mask)
        c = self.contract
        if hasattr(self.enc, "memory_out"):  # int8 on the boundary grid -> the same reals for Keras
            return dequantize(memory, c.scale, c.zero_point).astype(np.float32)
        return quantize(np.asarray(memory), c.scale, c.zero_point)  # Keras reals lie on that grid

    def decode_step(self, *args):
        return self.dec.decode_step(*args)


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


# === TFLite's fixed-point requantization (kernels/internal/common.h), for the kernel probe ===

def quantize_multiplier(real: float) -> tuple[int, int]:
    """(int32 mantissa q, exponent e) with real = q * 2**(e - 31), q rounded half away from zero (QuantizeMultiplier)."""
    if real == 0.0:
        return 0, 0
    frac, exp = math.frexp(real)
    q = int(math.copysign(math.floor(abs(frac) * (1 << 31) + 0.5), frac))
    if q == 1 << 31:
        q, exp = q // 2, exp + 1
    if exp < -31:
        return 0, 0
    return q, exp


def multiply_by_quantized_multiplier(x: np.ndarray, q: int, exp: int) -> np.ndarray:
    """TFLite's fixed-point rescale: SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT (two roundings)."""
    x = x.astype(np.int64) * (1 << max(exp, 0))
    ab = x * q
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    high = np.where(total >= 0, total // (1 << 31), -((-total) // (1 << 31)))  # C++ division truncates toward zero
    shift = max(-exp, 0)
    if shift == 0:
        return high
    mask = (1 << shift) - 1
    remainder = high & mask
    threshold = (mask >> 1) + (high < 0)
    return (high >> shift) + (remainder > threshold)


def _fixed_point_op(name: str, it, op: dict, details: dict, out: dict) -> np.ndarray | None:
    """The int8 output of FULLY_CONNECTED, BATCH_MATMUL, MUL or MEAN computed the way TFLite's integer kernels do
    (exact int32 accumulation, then the fixed-point rescale); None for other ops."""
    ins = [details[i] for i in op["inputs"] if i >= 0]
    if name == "MEAN":  # reference_ops::QuantizedMeanOrSum: the 1/N folded into the multiplier, then one rescale
        (si, zi), (so, zo) = ins[0]["quantization"], out["quantization"]
        x = it.get_tensor(ins[0]["index"]).astype(np.int64)
        axes = tuple(int(a) for a in np.atleast_1d(it.get_tensor(ins[1]["index"])))
        n = int(np.prod([x.shape[a] for a in axes]))
        q, e = quantize_multiplier(float(np.float64(si) / np.float64(so)))
        shift = min(n.bit_length() - 1, 32, 31 + e)
        q, e = (q << shift) // n, e - shift
        acc = x.sum(axis=axes, keepdims=True) - zi * n
        return np.clip(multiply_by_quantized_multiplier(acc, q, e) + zo, -128, 127).reshape(
            it.get_tensor(out["index"]).shape)
    if name not in ("FULLY_CONNECTED", "BATCH_MATMUL", "MUL"):
        return None
    if any(d["quantization_parameters"]["scales"].size != 1 for d in ins[:2]):
        return None  # per-channel: not emulated here
    (s1, z1), (s2, z2), (so, zo) = ins[0]["quantization"], ins[1]["quantization"], out["quantization"]
    a = it.get_tensor(ins[0]["index"]).astype(np.int64) - z1
    b = it.get_tensor(ins[1]["index"]).astype(np.int64) - z2
    q_shape = it.get_tensor(out["index"]).shape
    if name == "FULLY_CONNECTED":
        acc = np.tensordot(a, b, axes=([-1], [1]))
        if len(ins) > 2:
            acc = acc + it.get_tensor(ins[2]["index"]).astype(np.int64)
    elif name == "BATCH_MATMUL":
        acc = a @ b if a.shape[-1] == b.shape[-2] else a @ np.swapaxes(b, -1, -2)
    else:
        acc = a * b
    q, e = quantize_multiplier(float(np.float64(s1) * np.float64(s2) / np.float64(so)))
    return np.clip(multiply_by_quantized_multiplier(acc.reshape(q_shape), q, e) + zo, -128, 127)


def _fake_quant_grid(real: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """Real values onto an int8 grid the way TF's FakeQuant rounds (half up), as int64 steps."""
    return np.clip(np.floor(real / scale + 0.5) + zp, -128, 127).astype(np.int64)


def _dequant(it, index: int, details: dict) -> np.ndarray:
    """A tensor's real values: int8/int32 through its (per-tensor or per-channel) scale, floats as they are."""
    d = details[index]
    value = it.get_tensor(index)
    if value.dtype not in (np.int8, np.int16, np.int32) or not d["quantization_parameters"]["scales"].size:
        return value.astype(np.float64)
    qp = d["quantization_parameters"]
    scales, zps = qp["scales"].astype(np.float64), qp["zero_points"].astype(np.float64)
    if scales.size > 1:  # per channel along quantized_dimension
        shape = [1] * value.ndim
        shape[qp["quantized_dimension"]] = -1
        scales, zps = scales.reshape(shape), zps.reshape(shape)
    return (value.astype(np.float64) - zps) * scales


def _float_op(name: str, args: list[np.ndarray], out_shape: tuple) -> np.ndarray | None:
    """The op's real-valued result from its real-valued inputs (None: no float model here)."""
    if name == "FULLY_CONNECTED":
        x, w = args[0], args[1]
        y = np.tensordot(x, w, axes=([-1], [1]))
        if len(args) > 2 and args[2].size:
            y = y + args[2]
        return y.reshape(out_shape)
    if name == "BATCH_MATMUL":
        a, b = args
        y = a @ b if a.shape[-1] == b.shape[-2] else a @ np.swapaxes(b, -1, -2)
        return y.reshape(out_shape)
    if name in ("ADD", "SUB", "MUL", "MINIMUM", "MAXIMUM"):
        fn = {"ADD": np.add, "SUB": np.subtract, "MUL": np.multiply, "MINIMUM": np.minimum, "MAXIMUM": np.maximum}
        return fn[name](args[0], args[1]).reshape(out_shape)
    if name == "MEAN":
        axes = tuple(int(a) for a in np.atleast_1d(args[1]))
        return np.mean(args[0], axis=axes, keepdims=True).reshape(out_shape)
    if name == "RSQRT":
        return 1.0 / np.sqrt(args[0])
    if name == "SOFTMAX":
        e = np.exp(args[0] - args[0].max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    if name == "RELU":
        return np.maximum(args[0], 0.0)
    return None


def kernel_differences(blob: bytes, feeds: dict[str, np.ndarray], seed: int = 0) -> list[dict]:
    """Each int8 op of a graph against fake quantization of its own inputs: the op's real-valued result from the
    kernel's int8 inputs, rounded once onto the output grid, compared with the kernel's int8 output. Differences here
    are the kernel's own (fixed-point requantization, lookup-table softmax), not inherited from earlier ops; FC biases
    are the export's int32 ones, so the rounding of a float bias onto the int32 grid is not part of `differ`;
    `differ_float_bias` adds to each int32 bias a random offset of up to half a step, the float bias that fake
    quantization adds (the export rounded it onto the int32 grid)."""
    rng = np.random.default_rng(seed)
    it = Interpreter(model_content=blob, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.get_signature_runner("serving_default")(**feeds)
    details = {d["index"]: d for d in it.get_tensor_details()}
    rows = []
    for op in it._get_ops_details():  # noqa: SLF001
        out = details[op["outputs"][0]]
        if out["dtype"] != np.int8 or op["op_name"] in LAYOUT_OPS:
            continue
        args = [_dequant(it, i, details) if i >= 0 else np.zeros(0) for i in op["inputs"]]
        q = it.get_tensor(out["index"]).astype(np.int64)
        real = _float_op(op["op_name"], args, q.shape)
        if real is None:
            continue
        scale, zp = out["quantization"]
        emulated = _fake_quant_grid(real, scale, zp)
        diff = np.abs(emulated - q)
        row = {"op": op["op_name"], "tensor": out["name"].split(";")[0], "differ": float(np.mean(diff > 0)),
               "max_steps": int(diff.max())}
        fixed = _fixed_point_op(op["op_name"], it, op, details, out)
        if fixed is not None:
            row["differ_fixed_point"] = float(np.mean(fixed != q))
        if op["op_name"] == "FULLY_CONNECTED" and len(op["inputs"]) > 2 and op["inputs"][2] >= 0:
            bias_scale = details[op["inputs"][2]]["quantization_parameters"]["scales"].astype(np.float64)
            jitter = rng.uniform(-0.5, 0.5, args[2].shape) * bias_scale
            real = _float_op("FULLY_CONNECTED", [args[0], args[1], args[2] + jitter], q.shape)
            emulated = _fake_quant_grid(real, scale, zp)
            row["differ_float_bias"] = float(np.mean(emulated != q))
        rows.append(row)
    return rows
