"""`python -m s2s_qat.inspect FILE.tflite`: op and dtype inventory, with flags for what is not pure int8.

Flags: float activation tensors on the compute path, QUANTIZE/DEQUANTIZE ops, dynamic shapes, and ops outside
the builtin op set. Exit status: 0, or 1 with `--strict` when anything is flagged; 2 for a missing, corrupt or
non-TFLite file.
"""
from __future__ import annotations

import argparse
import json
import sys

from s2s_qat.export.inventory import NotTFLiteError, OpInventory, inventory_file


def flags(inv: OpInventory) -> list[str]:
    out = []
    if inv.float_tensors:
        shown = ", ".join(inv.float_tensors[:8]) + (" ..." if len(inv.float_tensors) > 8 else "")
        out.append(f"{len(inv.float_tensors)} float activation tensor(s) in {inv.float_ops} op(s): {shown}")
    if inv.quantize_ops:
        out.append(f"{inv.quantize_ops} QUANTIZE/DEQUANTIZE op(s)")
    if inv.dynamic_tensors:
        out.append(f"{len(inv.dynamic_tensors)} tensor(s) with dynamic shapes: {', '.join(inv.dynamic_tensors[:8])}")
    if inv.custom_ops:
        out.append(f"ops outside the builtin op set: {', '.join(sorted(set(inv.custom_ops)))}")
    return out


def _tensor_line(t: dict) -> str:
    quant = f" scale={t['scale'][0]:.6g} zero_point={t['zero_point'][0]}" if t["scale"] else ""
    return f"  {t['signature_name']:<24} {t['dtype']:<8} {t['shape']}{quant}"


def render(path: str, inv: OpInventory) -> str:
    lines = [f"{path}", "inputs:"]
    lines += [_tensor_line(t) for t in inv.inputs]
    lines.append("outputs:")
    lines += [_tensor_line(t) for t in inv.outputs]
    lines.append("ops:")
    lines += [f"  {name:<24} {n}" for name, n in sorted(inv.op_counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines.append("activation dtypes: " + ", ".join(f"{k} {v}" for k, v in sorted(inv.activation_dtypes.items())))
    found = flags(inv)
    lines.append("flags: none (pure integer compute path)" if not found else "flags:")
    lines += [f"  - {f}" for f in found]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.inspect", description=__doc__.splitlines()[0])
    parser.add_argument("file", help=".tflite file")
    parser.add_argument("--json", action="store_true", help="print the inventory as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when anything is flagged")
    args = parser.parse_args(argv)
    try:
        inv = inventory_file(args.file)
    except NotTFLiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(inv.as_dict(), indent=2, sort_keys=True) if args.json else render(args.file, inv))
    return 1 if args.strict and flags(inv) else 0


if __name__ == "__main__":
    sys.exit(main())
