"""Op and dtype inventory of a .tflite flatbuffer (what `inspect` prints and the ladder records)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ai_edge_litert import schema_py_generated as schema

_OP_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}
QDQ_OPS = {"QUANTIZE", "DEQUANTIZE"}


class NotTFLiteError(ValueError):
    """The file is not a readable TFLite flatbuffer."""


@dataclass
class OpInventory:
    op_counts: dict[str, int] = field(default_factory=dict)
    float_ops: int = 0             # operators that read or write a float activation tensor
    quantize_ops: int = 0          # QUANTIZE + DEQUANTIZE operators
    float_tensors: list[str] = field(default_factory=list)    # float activations on the compute path
    dynamic_tensors: list[str] = field(default_factory=list)  # tensors with a -1 in their shape signature
    custom_ops: list[str] = field(default_factory=list)       # ops outside the builtin op set
    activation_dtypes: dict[str, int] = field(default_factory=dict)
    inputs: list[dict] = field(default_factory=list)
    outputs: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _name(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def read_model(data: bytes, where: str = "<bytes>") -> schema.ModelT:
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise NotTFLiteError(f"{where} is not a TFLite model (no 'TFL3' file identifier)")
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as err:  # the flatbuffer reader raises many kinds of errors on a damaged file
        raise NotTFLiteError(f"{where} is a damaged TFLite model: {type(err).__name__}: {err}") from None


def inventory(data: bytes, where: str = "<bytes>") -> OpInventory:
    model = read_model(data, where)
    inv = OpInventory()
    signature_names: dict[tuple[int, int], str] = {}  # (subgraph, tensor index) -> signature input/output name
    for sig in model.signatureDefs or []:
        for entry in list(sig.inputs or []) + list(sig.outputs or []):
            signature_names[(sig.subgraphIndex, entry.tensorIndex)] = _name(entry.name)
    for g, graph in enumerate(model.subgraphs or []):
        tensors = graph.tensors or []

        def is_constant(i: int) -> bool:
            index = tensors[i].buffer  # buffer 0 is the empty sentinel of activations
            if index <= 0 or index >= len(model.buffers):
                return False
            buf = model.buffers[index]
            return (buf.data is not None and len(buf.data) > 0) or getattr(buf, "size", 0) > 0

        float_seen = set()
        for op in graph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            name = _OP_NAMES.get(builtin, str(builtin))
            if name == "CUSTOM":
                name = f"CUSTOM:{_name(code.customCode)}"
                inv.custom_ops.append(name)
            inv.op_counts[name] = inv.op_counts.get(name, 0) + 1
            if name in QDQ_OPS:
                inv.quantize_ops += 1
            activations = [i for i in list(op.inputs) + list(op.outputs) if i >= 0 and not is_constant(i)]
            floats = [i for i in activations if _TYPE_NAMES.get(tensors[i].type) in FLOAT_TYPES]
            if floats:
                inv.float_ops += 1
                float_seen.update(floats)
            for i in activations:
                t = _TYPE_NAMES.get(tensors[i].type, "?")
                inv.activation_dtypes[t] = inv.activation_dtypes.get(t, 0) + 1
        inv.float_tensors += sorted({_name(tensors[i].name) for i in float_seen})
        for t in tensors:
            sig = t.shapeSignature
            if sig is not None and any(int(d) < 0 for d in sig):
                inv.dynamic_tensors.append(_name(t.name))

        def describe(i: int) -> dict:
            t = tensors[i]
            q = t.quantization
            scale = [float(x) for x in q.scale] if q is not None and q.scale is not None else []
            zero = [int(x) for x in q.zeroPoint] if q is not None and q.zeroPoint is not None else []
            return {"name": _name(t.name), "signature_name": signature_names.get((g, i), _name(t.name)),
                    "dtype": _TYPE_NAMES.get(t.type, "?"),
                    "shape": [int(d) for d in (t.shape if t.shape is not None else [])],
                    "scale": scale, "zero_point": zero}

        inv.inputs += [describe(i) for i in graph.inputs]
        inv.outputs += [describe(i) for i in graph.outputs]
    return inv


def inventory_file(path: str | Path) -> OpInventory:
    path = Path(path)
    if not path.is_file():
        raise NotTFLiteError(f"{path} does not exist")
    return inventory(path.read_bytes(), str(path))
