"""`python -m s2s_qat.evaluate PATH --data DATA`: BLEU, chrF, exact match and source sensitivity of any variant.

PATH is an `artifacts/` folder, a ladder variant folder (TFLite backend) or a run directory (FP32 teacher, Keras
backend). DATA is a json/jsonl/csv/tsv/parquet file, a saved dataset folder, or a run directory (its test split).
`--fp32 RUN_DIR` also compares the first-step logits with that run's FP32 teacher (cosine_to_fp32, argmax agreement).
Exit status 2 for a missing or unusable PATH or DATA.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from s2s_qat.recipe import RecipeError
from s2s_qat.runtime.loading import open_model, runtime_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="artifacts folder, ladder variant folder or run directory")
    parser.add_argument("--data", required=True, help="evaluation pairs: file, saved dataset folder or run directory")
    parser.add_argument("--split", default="test", help="split of a saved dataset (default: test)")
    parser.add_argument("--source-column", default="source", help="input text column (a.b for nested; default source)")
    parser.add_argument("--target-column", default="target", help="reference column (default target)")
    parser.add_argument("--max-sentences", type=int, help="evaluate the first N pairs only")
    parser.add_argument("--sensitivity-sources", type=int, default=32, help="sources for source sensitivity (>= 2)")
    parser.add_argument("--beam", type=int, help="beam size (1: greedy); default from the manifest or recipe")
    parser.add_argument("--fp32", type=Path, help="run directory whose FP32 teacher the first-step logits are compared to")
    parser.add_argument("--json", type=Path, help="also write the result row as JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.beam is not None and args.beam < 1:
        parser.error("--beam must be >= 1")
    if args.max_sentences is not None and args.max_sentences < 1:
        parser.error("--max-sentences must be >= 1")
    if args.sensitivity_sources < 2:
        parser.error("--sensitivity-sources must be >= 2")

    from s2s_qat.data import DataError, load_pairs

    try:
        runtime = runtime_settings(args.path, args.beam)
        pairs = load_pairs(args.data, args.source_column, args.target_column, args.split)
        codec, backend = open_model(args.path)
    except (RecipeError, DataError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n = len(pairs) if args.max_sentences is None else min(len(pairs), args.max_sentences)
    if n == 0:
        print(f"error: {args.data} holds no evaluation pairs", file=sys.stderr)
        return 2
    sources, references = pairs["source"][:n], pairs["target"][:n]

    import dataclasses

    from s2s_qat.recipe import EvalConfig, Recipe
    from s2s_qat.validate import evaluate_variant
    from s2s_qat.validate.metrics import first_step_logits, source_sensitivity

    recipe = Recipe(name="evaluate", runtime=runtime, eval=EvalConfig(sensitivity_sources=args.sensitivity_sources))
    size = sum(p.stat().st_size for p in args.path.glob("*.tflite")) or None
    result, hyps, logits = evaluate_variant(args.path.name, backend, codec, recipe, sources, references, None, size,
                                            progress=not args.no_progress)
    sens = result.source_sensitivity
    if args.fp32 is not None:
        try:
            fp32_codec, fp32_backend = open_model(args.fp32)
        except FileNotFoundError as err:
            print(f"error: --fp32: {err}", file=sys.stderr)
            return 2
        probe = sources[: args.sensitivity_sources]
        fp32_logits = first_step_logits(fp32_backend, fp32_codec, probe)
        sens = source_sensitivity(logits, fp32_logits).as_dict()
    else:  # no FP32 reference given: these two fields would only compare the variant with itself
        sens = dict(sens, cosine_to_fp32=None, argmax_agreement_fp32=None)
    result = dataclasses.replace(result, source_sensitivity=sens)
    print(f"{result.name}: {n} sentences  BLEU {result.bleu:.2f}  chrF {result.chrf:.2f}  "
          f"exact {result.exact_match:.1f}%  pair cosine {sens['pair_cosine']:.3f}"
          + (f"  cosine to FP32 {sens['cosine_to_fp32']:.3f}" if sens.get("cosine_to_fp32") is not None else "")
          + (f"  {result.tokens_per_second:.1f} tokens/s" if result.tokens_per_second else ""))
    if args.json is not None:
        from s2s_qat.atomic import write_json

        write_json(args.json, dict(result.as_dict(), data=str(args.data), examples=[
            {"source": s, "reference": r, "output": h} for s, r, h in list(zip(sources, references, hyps))[:10]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
