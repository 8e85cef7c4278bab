"""Where do a QAT Keras model and its TFLite export first disagree? Op by op, in the encoder graph's order.

    python scripts/qat_parity_probe.py RUN_DIR [--rows 4] [--json OUT]

Prints, for every int8 op of qat/export/encoder.tflite, the share of elements whose int8 value differs from the
fake-quantized Keras tensor (on the TFLite tensor's grid) and the largest difference in steps, averaged over the
first ROWS test sentences (see s2s_qat/qat/probe.py).

With --kernels, each op is instead compared with one rounding of its exact real result computed from the kernel's
own int8 inputs (what fake quantization assumes), so only the kernel's own rounding counts; the `fixed` column is the
same comparison against TFLite's fixed-point rescale (two roundings) emulated in numpy for FULLY_CONNECTED,
BATCH_MATMUL, MUL and MEAN, and `+fbias` against a float bias instead of the export's int32 one.

With --graphs N, which graph loses parity: greedy outputs on the first N test sentences of the four encoder x
decoder combinations (QAT Keras or TFLite each; the int8 boundary is exact both ways), each compared with pure
Keras and pure TFLite, plus how many encoder-output int8 values differ between the two encoders.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from s2s_qat.data import load_splits  # noqa: E402
from s2s_qat.models import TransformerConfig, build_core, teacher_forced_logits  # noqa: E402
from s2s_qat.pipeline import RunPaths  # noqa: E402
from s2s_qat.qat import attach_quantization, calibrate  # noqa: E402
from s2s_qat.qat.probe import HybridBackend, encoder_captures, kernel_differences, step_differences  # noqa: E402
from s2s_qat.recipe import RuntimeConfig  # noqa: E402
from s2s_qat.runtime import KerasBackend, Translator, pad_source  # noqa: E402
from s2s_qat.runtime.tflite_backend import TFLiteBackend  # noqa: E402
from s2s_qat.tokenizer import TextCodec  # noqa: E402


def load_qat(paths: RunPaths):
    """The QAT model of a run: quantizers attached (one calibration pass creates them), weights and ranges read."""
    cfg = TransformerConfig.load(paths.qat / "model" / "config.json")
    core = build_core(cfg)
    state = attach_quantization(core)
    ids = np.full((1, cfg.source_length), cfg.pad_token_id, np.int32)
    ids[0, :2] = cfg.eos_token_id
    dec = np.full((1, cfg.target_length), cfg.pad_token_id, np.int32)
    dec[0, :2] = cfg.bos_token_id
    calibrate(core, state, [None], lambda c, _: teacher_forced_logits(
        c, ids, (ids != cfg.pad_token_id).astype(np.int32), dec, (dec != cfg.pad_token_id).astype(np.int32)))
    tf.train.Checkpoint(core=core).read(str(paths.qat / "model" / "weights")).assert_existing_objects_matched()
    return core


def graph_split(paths: RunPaths, n: int) -> dict:
    """Identical greedy outputs of the four encoder x decoder combinations, and encoder-output int8 differences."""
    core = load_qat(paths)
    codec = TextCodec.load(paths.tokenizer)
    keras = KerasBackend(core)
    tflite = TFLiteBackend(paths.qat / "export" / "encoder.tflite", paths.qat / "export" / "decoder_step.tflite")
    c = tflite.memory_in
    sources = list(load_splits(paths.data)["test"]["source"][:n])
    combos = {"keras": keras, "tflite": tflite, "tflite-encoder + keras-decoder": HybridBackend(tflite, keras, c),
              "keras-encoder + tflite-decoder": HybridBackend(keras, tflite, c)}
    outputs = {}
    for name, backend in combos.items():
        tr = Translator.create(codec, backend, RuntimeConfig())
        outputs[name] = [tuple(h.tokens) if (h := tr.hypothesis(text)) else () for text in sources]
    rows = {name: {"identical_to_keras": float(np.mean([a == b for a, b in zip(out, outputs["keras"])])),
                   "identical_to_tflite": float(np.mean([a == b for a, b in zip(out, outputs["tflite"])]))}
            for name, out in outputs.items()}
    differ, steps = [], 0
    for text in sources:
        ids, mask = pad_source(codec.encode_source(text, tflite.source_length).ids, tflite.source_length,
                               core.cfg.pad_token_id)
        a = combos["keras-encoder + tflite-decoder"].encode(ids, mask).astype(np.int32)  # Keras on the int8 grid
        d = np.abs(a - tflite.encode(ids, mask).astype(np.int32))[0][mask[0].astype(bool)]
        differ.append(float((d > 0).mean()))
        steps = max(steps, int(d.max()))
    return {"sentences": len(sources), "combinations": rows,
            "encoder_output_int8": {"differ": float(np.mean(differ)), "max_steps": steps}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--rows", type=int, default=4, help="test sentences to average over")
    ap.add_argument("--json", type=Path, help="write the table as JSON")
    ap.add_argument("--kernels", action="store_true",
                    help="each op against fake quantization of its own int8 inputs (the kernels' own rounding)")
    ap.add_argument("--graphs", type=int, metavar="N",
                    help="greedy outputs of the four encoder x decoder combinations on N test sentences")
    args = ap.parse_args(argv)
    paths = RunPaths(args.run_dir)
    if not (paths.qat / "export" / "encoder.tflite").is_file():
        print(f"error: {paths.qat / 'export' / 'encoder.tflite'} does not exist; run a recipe with qat.enabled",
              file=sys.stderr)
        return 2
    if args.graphs:
        split = graph_split(paths, args.graphs)
        print(f"{split['sentences']} test sentences, greedy")
        print(f"{'encoder + decoder':32} {'= keras':>8} {'= tflite':>9}")
        for name, row in split["combinations"].items():
            print(f"{name:32} {row['identical_to_keras']:8.3f} {row['identical_to_tflite']:9.3f}")
        e = split["encoder_output_int8"]
        print(f"encoder output int8 values that differ (real positions): {e['differ']:.4f}, max {e['max_steps']} steps")
        if args.json:
            args.json.write_text(json.dumps(split, indent=1))
        return 0
    core = None if args.kernels else load_qat(paths)
    codec = TextCodec.load(paths.tokenizer)
    cfg = TransformerConfig.load(paths.qat / "model" / "config.json")
    blob = (paths.qat / "export" / "encoder.tflite").read_bytes()
    table: dict[str, list[dict]] = {}
    s = cfg.source_length
    for text in load_splits(paths.data)["test"]["source"][: args.rows]:
        ids, mask = pad_source(codec.encode_source(text, s).ids, s, cfg.pad_token_id)
        if args.kernels:
            rows = kernel_differences(blob, {"input_ids": ids.astype(np.int32), "attention_mask": mask.astype(np.int32)})
        else:
            rows = step_differences(blob, ids, mask, encoder_captures(core, ids, mask))
        for row in rows:
            table.setdefault(row["tensor"], []).append(row)
    out = [dict(rows[0], differ=float(np.mean([r["differ"] for r in rows])),
                max_steps=max(r["max_steps"] for r in rows)) for rows in table.values()]
    for row, rows in zip(out, table.values()):
        for key in ("differ_fixed_point", "differ_float_bias"):
            if key in row:
                row[key] = float(np.mean([r[key] for r in rows]))
    print(f"{'op':16} {'differ':>7} {'max':>4} {'fixed':>7} {'+fbias':>7}  tensor")
    for row in out:
        cols = [f"{row[k]:7.4f}" if k in row else " " * 7 for k in ("differ_fixed_point", "differ_float_bias")]
        print(f"{row['op']:16} {row['differ']:7.4f} {row['max_steps']:4d} {' '.join(cols)}  {row['tensor']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
