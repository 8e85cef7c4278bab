"""Child process of the ladder: evaluate one exported variant through the TFLite backend.

    python -m s2s_qat.validate.ladder_worker RUN_DIR VARIANT_DIR NAME

Writes VARIANT_DIR/metrics.json on success; any abort leaves no metrics and a non-zero status. Full-INT8
variants also get VARIANT_DIR/localization.json (every int8 tensor's error against float, worst first).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

from s2s_qat.atomic import write_json
from s2s_qat.data import load_splits
from s2s_qat.export.calibration import CalibrationSet
from s2s_qat.recipe import parse_recipe
from s2s_qat.runtime.tflite_backend import TFLiteBackend
from s2s_qat.tokenizer import TextCodec
from s2s_qat.validate.evaluate import evaluate_variant
from s2s_qat.validate.ladder import RUNGS, calibration_file, localized_graphs
from s2s_qat.validate.localize import LOCALIZATION_TOP, localize, worst_first


def main(argv: list[str]) -> int:
    run_dir, variant_dir, name = Path(argv[0]), Path(argv[1]), argv[2]
    recipe = parse_recipe(yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text()))
    codec = TextCodec.load(run_dir / "tokenizer")
    test = load_splits(run_dir / "data")["test"]
    n = len(test) if recipe.eval.max_sentences is None else min(len(test), recipe.eval.max_sentences)
    backend = TFLiteBackend(variant_dir / "encoder.tflite", variant_dir / "decoder_step.tflite")
    fp32_logits = np.load(run_dir / "ladder" / "fp32_first_step_logits.npy")
    result, _, _ = evaluate_variant(name, backend, codec, recipe, test["source"][:n], test["target"][:n], fp32_logits,
                                    None, progress=False)
    if recipe.ladder.localize and name in RUNGS and localized_graphs(RUNGS[name]):
        rows = _localize(run_dir, variant_dir, RUNGS[name], recipe.ladder.localization_rows)
        write_json(variant_dir / "localization.json", rows)
        result.extra["localization"] = rows[:LOCALIZATION_TOP]
    write_json(variant_dir / "metrics.json", result.as_dict())
    return 0


def _localize(run_dir: Path, variant_dir: Path, rung, n_rows: int) -> list[dict]:
    """Per-tensor int8 error of both graphs against float conversions of the same Keras graphs, worst first."""
    from s2s_qat.export import convert
    from s2s_qat.models import build_decoder_step, build_encoder
    from s2s_qat.pipeline import load_teacher

    core, _ = load_teacher(run_dir)
    calib = CalibrationSet.load(run_dir / "ladder" / calibration_file(rung.calibration))
    rows = []
    for kind in localized_graphs(rung):
        builder, data = (build_encoder, calib.encoder) if kind == "encoder" else (build_decoder_step, calib.decoder)
        float_blob = convert(builder(core, reference=rung.reference), "float")
        int8_blob = (variant_dir / f"{kind}.tflite").read_bytes()
        rows += [e.as_dict() for e in localize(float_blob, int8_blob, kind, data[:n_rows])]
    return worst_first(rows)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
