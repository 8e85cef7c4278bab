"""Where do a QAT Keras model and its TFLite export first disagree? Op by op, in the encoder graph's order.

    python scripts/qat_parity_probe.py RUN_DIR [--rows 4] [--json OUT]

Prints, for every int8 op of qat/export/encoder.tflite, the share of elements whose int8 value differs from the
fake-quantized Keras tensor (on the TFLite tensor's grid) and the largest difference in steps, averaged over the
first ROWS test sentences (see s2s_qat/qat/probe.py).
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
from s2s_qat.qat.probe import encoder_captures, step_differences  # noqa: E402
from s2s_qat.runtime import pad_source  # noqa: E402
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--rows", type=int, default=4, help="test sentences to average over")
    ap.add_argument("--json", type=Path, help="write the table as JSON")
    args = ap.parse_args(argv)
    paths = RunPaths(args.run_dir)
    if not (paths.qat / "export" / "encoder.tflite").is_file():
        print(f"error: {paths.qat / 'export' / 'encoder.tflite'} does not exist; run a recipe with qat.enabled",
              file=sys.stderr)
        return 2
    core = load_qat(paths)
    codec = TextCodec.load(paths.tokenizer)
    blob = (paths.qat / "export" / "encoder.tflite").read_bytes()
    table: dict[str, list[dict]] = {}
    s = core.cfg.source_length
    for text in load_splits(paths.data)["test"]["source"][: args.rows]:
        ids, mask = pad_source(codec.encode_source(text, s).ids, s, core.cfg.pad_token_id)
        for row in step_differences(blob, ids, mask, encoder_captures(core, ids, mask)):
            table.setdefault(row["tensor"], []).append(row)
    out = [dict(rows[0], differ=float(np.mean([r["differ"] for r in rows])),
                max_steps=max(r["max_steps"] for r in rows)) for rows in table.values()]
    print(f"{'op':16} {'differ':>7} {'max':>4}  tensor")
    for row in out:
        print(f"{row['op']:16} {row['differ']:7.3f} {row['max_steps']:4d}  {row['tensor']}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
