"""`python -m s2s_qat.train RECIPE.yaml`: run the whole pipeline (resumable; unchanged stages are skipped).

Exit status: 0 on success, 1 when a gate fails (the report is still written), 2 for a bad recipe or input.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from s2s_qat.recipe import RecipeError, load_recipe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.train", description=__doc__.splitlines()[0])
    parser.add_argument("recipe", help="recipe YAML file, e.g. recipes/tn_en_small.yaml")
    parser.add_argument("--run-dir", type=Path, help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    logging.getLogger("s2s_qat").setLevel(logging.INFO)
    try:
        recipe = load_recipe(args.recipe)
    except RecipeError as err:
        print(f"error: {args.recipe}: {err}", file=sys.stderr)
        return 2
    from s2s_qat.data import DataError  # heavy imports only after the recipe is known to be valid
    from s2s_qat.pipeline import run_pipeline

    run_dir = args.run_dir or Path("runs") / recipe.name
    try:
        report = run_pipeline(recipe, run_dir, progress=not args.no_progress)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: a checkpoint was saved; run the same command again to resume ({run_dir})",
              file=sys.stderr)
        return 130
    for v in report["variants"]:
        if v["status"] != "ok":
            print(f"{v['name']}: {v['status']}: {v['error']}")
            continue
        print(f"{v['name']}: BLEU {v['bleu']:.2f}  chrF {v['chrf']:.2f}  exact {v['exact_match']:.1f}%  "
              f"pair cosine {v['source_sensitivity']['pair_cosine']:.3f}")
    print(f"report: {run_dir / 'report.md'}")
    art = report["artifacts"] or {}
    if art.get("dir"):
        print(f"artifacts: {art['dir']} ({art['variant']})")
    elif art.get("withheld"):
        print(f"artifacts: {art['variant']} withheld ({art['withheld']})")
    if not report["gates"]["passed"]:
        for c in report["gates"]["checks"]:
            if not c["passed"]:
                print(f"gate failed: {c['name']}: {c['message']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
