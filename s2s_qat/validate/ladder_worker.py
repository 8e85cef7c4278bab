"""Child process of the ladder: evaluate one exported variant through the TFLite backend.

    python -m s2s_qat.validate.ladder_worker RUN_DIR VARIANT_DIR NAME

Writes VARIANT_DIR/metrics.json on success; any abort leaves no metrics and a non-zero status.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import yaml

from s2s_qat.atomic import write_json
from s2s_qat.data import load_splits
from s2s_qat.recipe import parse_recipe
from s2s_qat.runtime.tflite_backend import TFLiteBackend
from s2s_qat.tokenizer import TextCodec
from s2s_qat.validate.evaluate import evaluate_variant


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
    write_json(variant_dir / "metrics.json", result.as_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
