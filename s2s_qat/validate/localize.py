"""Per-tensor INT8-vs-float error: where does quantization break the model? (DESIGN section 6)

The int8 graph and the float graph of the *same* Keras model are run on the same inputs with every intermediate
tensor preserved; tensors are matched by name (the converter keeps the TF op names, and the layers open name
scopes such as `scores`, `masked_scores`, `softmax`, `context`, `*_residual`, `logits`), the int8 tensor is
dequantized and compared with its float twin:

    relative RMSE = RMSE(dequantized int8 - float) / signal          (noise-to-signal; 1.0 = nothing left)

where signal is the float tensor's RMS, floored at a quarter of the RMS of the op's largest float input (so a
near-zero tensor such as the mean of a centred LayerNorm input is not flagged for errors its consumers never see).

That error is accumulated (what the tensor inherits plus what its op adds). `added` is the part its own op
adds: its error minus the largest error among the op's inputs, so the first tensors with a large `added` are
where the failure starts.

TFLite's QuantizationDebugger was tried first: on TF 2.21 its layer-wise NumericVerify numbers for BATCH_MATMUL are
not trustworthy (attention context 0.67 layer-wise while the accumulated error of the same tensor stays below
0.09, in a model whose BLEU matches FP32), so this comparison is done directly with the ai-edge-litert interpreter.
"""
from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import asdict, dataclass

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

QDQ_OP_NAMES = ("QUANTIZE", "DEQUANTIZE")
ROLE_SCOPES = {"self_attn", "encoder_attn", "ffn", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2",
               "scores", "masked_scores", "softmax", "context", "logits", "shared", "encoder_positions",
               "decoder_positions", "self_attn_residual", "encoder_attn_residual", "ffn_residual",
               "self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm", "encoder_layer_norm",
               "decoder_layer_norm", "encoder_layernorm_embedding", "decoder_layernorm_embedding", "mask_bias",
               "causal_bias", "embed"}
_LAYER = re.compile(r"^(encoder|decoder)_layer_\d+$")
SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorError:
    graph: str            # encoder | decoder_step
    label: str            # readable role, e.g. decoder_layer_0/encoder_attn/scores
    op: str               # TFLite op that produced the tensor
    relative_rmse: float  # accumulated: RMSE(dequantized int8 - float) / signal (see module doc)
    added: float          # this op's share: relative_rmse minus the largest relative_rmse of its inputs
    rmse_over_scale: float  # the same RMSE in int8 steps
    scale: float
    zero_point: int
    order: int            # execution order of the producing op
    tensor: str           # the TFLite tensor name (first fused component)

    def as_dict(self) -> dict:
        return asdict(self)


def tensor_label(name: str) -> str:
    """A readable role from a TFLite tensor name: the layer and role scopes, TF op names dropped.

    `decoder_step/seq2seq/decoder_layer_0/encoder_attn/scores/MatMul;...` -> `decoder_layer_0/encoder_attn/scores`.
    """
    parts = name.split(";")[0].split("/")
    # TF makes repeated scopes unique (`mask_bias_1`); the role is the same
    parts = [p if _LAYER.match(p) else re.sub(r"_\d+$", "", p) if re.sub(r"_\d+$", "", p) in ROLE_SCOPES else p
             for p in parts]
    kept = [p for p in parts if _LAYER.match(p) or p in ROLE_SCOPES]
    if not kept:
        return parts[-1]
    # keep the op-level scope under a role (e.g. layer-norm internals: `final_layer_norm/Rsqrt`)
    last = max(i for i, p in enumerate(parts) if p in kept)
    tail = parts[last + 1:]
    if tail and parts[last].endswith("layer_norm"):
        kept.append(tail[0].split(":")[0])
    return "/".join(kept)


LOCALIZATION_TOP = 10  # rows of each variant shown in report.md / report.json


def worst_first(rows: list[dict]) -> list[dict]:
    """Rows of both graphs in one table, the largest `added` error first (encoder before decoder on ties)."""
    return sorted(rows, key=lambda r: (-r["added"], r["graph"] != "encoder", r["order"]))


def _label(name: str, twin: str) -> str:
    """The int8 tensor's role; where that names a fake-quantization op (QAT exports), the float twin's role."""
    label = tensor_label(name)
    return tensor_label(twin) if "Quant" in label.rsplit("/", 1)[-1] else label


class _Runner:
    """One interpreter per graph, reused for every row; only the tensors compared are read back."""

    def __init__(self, model: bytes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "preserve_all_tensors is for debugging": it is
            # No default delegate: XNNPACK would fuse ops into one DELEGATE node and hide their tensors.
            self.interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True,
                                      experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.runner = self.interp.get_signature_runner(SIGNATURE)
        self.inputs = self.runner.get_input_details()
        outputs = {int(d["index"]): name for name, d in self.runner.get_output_details().items()}
        self.details = {d["name"]: dict(d, output_name=outputs.get(int(d["index"])))
                        for d in self.interp.get_tensor_details()}

    def run(self, row: dict) -> None:
        feed = {}
        for name, detail in self.inputs.items():
            value = np.asarray(row[name])
            if detail["dtype"] == np.int8:
                scale, zp = detail["quantization"]
                value = np.clip(np.round(value / scale + zp), -128, 127).astype(np.int8)
            feed[name] = value.astype(detail["dtype"])
        self.runner(**feed)

    def tensor(self, name: str) -> np.ndarray | None:
        try:
            return self.interp.get_tensor(self.details[name]["index"])
        except ValueError:  # tensors without data (e.g. scratch buffers)
            return None


def _producers(interp: Interpreter) -> dict[int, tuple[int, str, list[int]]]:
    """tensor index -> (op order, op name, input tensor indices)."""
    out = {}
    for op in interp._get_ops_details():  # noqa: SLF001 - the public API has no op graph
        for t in op["outputs"]:
            out[int(t)] = (int(op["index"]), op["op_name"], [int(i) for i in op["inputs"] if i >= 0])
    return out


def _op_outputs(model: bytes) -> list[tuple[str, list[str]]]:
    """(op name, output tensor names) of every op in execution order."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=model,
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    names = {int(d["index"]): d["name"] for d in interp.get_tensor_details()}
    return [(op["op_name"], [names[int(t)] for t in op["outputs"] if t >= 0 and int(t) in names])
            for op in interp._get_ops_details()]  # noqa: SLF001 - the public API has no op graph


def twin_names(float_model: bytes, int8_model: bytes) -> dict[str, str]:
    """int8 tensor name -> float tensor name, by aligning the two graphs' op sequences.

    For graphs whose tensor names differ though their ops are the same: a QAT export names each tensor after the
    fake-quantization op that carried its range, the float conversion of the same weights after the op itself.
    """
    f_ops = _op_outputs(float_model)
    q_ops = [op for op in _op_outputs(int8_model) if op[0] not in QDQ_OP_NAMES]
    matcher = difflib.SequenceMatcher(a=[o for o, _ in q_ops], b=[o for o, _ in f_ops], autojunk=False)
    twins = {}
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            twins.update(zip(q_ops[block.a + k][1], f_ops[block.b + k][1]))
    return twins


def localize(float_model: bytes, int8_model: bytes, graph: str, rows: list[dict],
             twins: dict[str, str] | None = None) -> list[TensorError]:
    """Every int8 activation of `int8_model` with a float twin in `float_model`, worst `added` first.

    `rows` are dict rows keyed by the graphs' input names with float/int32 values (int8 inputs are quantized here).
    Twins are tensors of the same name, or `twins[int8 name]` when given (see `twin_names`).
    """
    if not rows:
        raise ValueError("localization needs at least one input row")
    rmse: dict[str, list[float]] = {}
    steps: dict[str, list[float]] = {}
    signal: dict[int, list[float]] = {}  # int8-model tensor index -> RMS of its float twin (weights included)
    meta: dict[str, dict] = {}
    q_graph, f_graph = _Runner(int8_model), _Runner(float_model)
    for row in rows:
        q_graph.run(row)
        f_graph.run(row)
        for name, d in q_graph.details.items():
            twin = twins.get(name) if twins is not None else name
            f_detail = f_graph.details.get(twin)
            if f_detail is None or f_detail["dtype"] != np.float32:
                continue
            f = f_graph.tensor(twin)
            if f is None:
                continue
            f64 = f.astype(np.float64)
            signal.setdefault(int(d["index"]), []).append(float(np.sqrt(np.mean(f64 ** 2))))
            params = d["quantization_parameters"]
            if d["dtype"] != np.int8 or len(params["scales"]) != 1:
                continue
            if f64.shape != tuple(d["shape"]) or f64.ndim < 2 or f64.shape[0] != 1:
                continue  # weights (per-channel or per-tensor constants) have no batch axis
            q = q_graph.tensor(name)
            if q is None or q.shape != f64.shape:
                continue
            scale, zp = float(params["scales"][0]), int(params["zero_points"][0])
            err = float(np.sqrt(np.mean(((q.astype(np.float64) - zp) * scale - f64) ** 2)))
            rmse.setdefault(name, []).append(err)
            steps.setdefault(name, []).append(err / scale)
            meta[name] = {"index": int(d["index"]), "scale": scale, "zero_point": zp, "output": d["output_name"],
                          "twin": twin}
    producers = _producers(q_graph.interp)
    rms = {i: float(np.mean(v)) for i, v in signal.items()}
    relative: dict[int, float] = {}
    for name in sorted(meta, key=lambda n: producers.get(meta[n]["index"], (10 ** 9,))[0]):
        index = meta[name]["index"]
        if index not in producers:
            continue  # not an op output (e.g. a kernel's scratch buffer)
        # Signal = the tensor's own RMS, floored at a quarter of its largest input's: a near-zero tensor (a
        # LayerNorm mean of a centred stream) would otherwise read as broken for an error its consumers never see.
        inputs = producers[index][2]
        floor = 0.25 * max([rms[i] for i in inputs if i in rms], default=0.0)
        denom = max(rms.get(index, 0.0), floor)
        if denom > 1e-12:
            relative[index] = float(np.mean(rmse[name])) / denom
    out = []
    for name, m in meta.items():
        if m["index"] not in relative:
            continue
        order, op, inputs = producers[m["index"]]
        err = relative[m["index"]]
        inherited = max([relative[i] for i in inputs if i in relative], default=0.0)
        label = m["output"] or _label(name, m["twin"])  # graph outputs by their signature names
        out.append(TensorError(graph=graph, label=label, op=op, relative_rmse=err,
                               added=max(0.0, err - inherited), rmse_over_scale=float(np.mean(steps[name])),
                               scale=m["scale"], zero_point=m["zero_point"], order=order,
                               tensor=name.split(";")[0]))
    out.sort(key=lambda r: (-r.added, r.order))
    return out
