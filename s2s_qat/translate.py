"""`python -m s2s_qat.translate RUN_DIR "text" ...`: translate with the run's FP32 teacher (Keras backend).

Texts come from the arguments, or one per line from standard input when none is given.
Exit status 2 when RUN_DIR holds no trained teacher.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from s2s_qat.recipe import RecipeError, RuntimeConfig, parse_recipe


def _runtime(run_dir: Path, args: argparse.Namespace) -> RuntimeConfig:
    resolved = run_dir / "recipe.resolved.yaml"
    runtime = parse_recipe(yaml.safe_load(resolved.read_text())).runtime if resolved.is_file() else RuntimeConfig()
    if args.beam is not None:
        runtime = dataclasses.replace(runtime, decoding="beam" if args.beam > 1 else "greedy", beam_size=args.beam)
    return runtime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.translate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory, e.g. runs/tn_en_small")
    parser.add_argument("texts", nargs="*", help="texts to translate (default: lines of standard input)")
    parser.add_argument("--backend", choices=["keras"], default="keras", help="model backend")
    parser.add_argument("--beam", type=int, help="beam size (1: greedy); default from the run's recipe")
    args = parser.parse_args(argv)
    if args.beam is not None and args.beam < 1:
        parser.error("--beam must be >= 1")
    try:
        runtime = _runtime(args.run_dir, args)
    except RecipeError as err:
        print(f"error: {args.run_dir / 'recipe.resolved.yaml'}: {err}", file=sys.stderr)
        return 2
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.runtime import KerasBackend, Translator

    try:
        core, codec = load_teacher(args.run_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    translator = Translator.create(codec, KerasBackend(core), runtime)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    for text in texts:
        print(translator.translate(text))
    if translator.stats.truncated_sources:
        print(f"note: {translator.stats.truncated_sources} input(s) longer than {core.cfg.source_length} tokens "
              f"were truncated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
