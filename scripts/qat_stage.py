"""Run a recipe's pipeline up to and including the teacher's QAT stage (no students, no ladder), optionally with
another deployment LayerNorm, and record the stage's parity, localization and timing: an A/B of QAT settings on one
teacher (stages already done in the run directory are skipped; the teacher is reused across LayerNorm forms).

    python scripts/qat_stage.py recipes/tn_en_bench.yaml --run-dir runs/tn_en_bench_mm --layernorm-variance matmul

Prints a table and writes JSON (default: benchmarks/<recipe name>_qat_<layernorm variance>.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from s2s_qat.pipeline import RunPaths, stage_data, stage_qat, stage_teacher, stage_tokenizer  # noqa: E402
from s2s_qat.recipe import load_recipe  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--run-dir", type=Path, help="default: runs/<recipe name>")
    parser.add_argument("--layernorm-variance", choices=("mul", "matmul"), help="override model.layernorm_variance")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    recipe = load_recipe(args.recipe)
    if args.layernorm_variance:
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model,
                                                                       layernorm_variance=args.layernorm_variance))
    if not recipe.qat.enabled:
        print(f"{args.recipe}: qat.enabled is false; nothing to run", file=sys.stderr)
        return 2
    paths = RunPaths(args.run_dir or ROOT / "runs" / recipe.name)
    tok = stage_tokenizer(recipe, paths, stage_data(recipe, paths))
    teacher_digest, training = stage_teacher(recipe, paths, tok, progress=False)
    _, qat = stage_qat(recipe, paths, teacher_digest, progress=False)
    if qat is None:
        return 1
    variance = recipe.model.layernorm_variance
    result = {"recipe": recipe.name, "layernorm_variance": variance, "teacher_training_seconds": training["seconds"],
              "command": f"python scripts/qat_stage.py {args.recipe} --run-dir {paths.root} "
                         f"--layernorm-variance {variance}",
              **{k: qat[k] for k in ("training", "parity", "phase_seconds", "producing_seconds", "seconds")},
              "localization_top5": [{k: r[k] for k in ("graph", "label", "op", "added", "relative_rmse")}
                                    for r in qat.get("localization", [])[:5]]}
    out = args.out or ROOT / "benchmarks" / f"{recipe.name}_qat_{variance}.json"
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    p = qat["parity"]
    print(f"layernorm_variance {variance}: QAT {qat['training']['steps']} steps, val NLL "
          f"{qat['training']['best_val_loss']:.4f}; parity cosine {p['mean_cosine']:.5f}, identical "
          f"{100 * p['identical_greedy']:.1f}%; stage {qat['seconds'] / 60:.1f} min "
          f"({qat['seconds'] / training['seconds']:.2f} x teacher)")
    for r in result["localization_top5"]:
        print(f"  {r['graph']:>12} {r['label']:<48} {r['op']:<14} added {r['added']:.3f}  rel {r['relative_rmse']:.3f}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
