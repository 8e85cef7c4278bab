"""`python -m s2s_qat.translate PATH "text" ...`: translate through the host generation loop.

PATH is a run directory (the FP32 teacher, Keras backend) or a folder holding `encoder.tflite` and
`decoder_step.tflite` (an `artifacts/` folder or a ladder variant `runs/<name>/ladder/<variant>`; TFLite backend).
Texts come from the arguments, or one per line from standard input when none is given.
Exit status 2 when PATH holds neither a trained teacher nor TFLite graphs.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import yaml

from s2s_qat.recipe import RecipeError, RuntimeConfig, parse_recipe


def _run_dir_of(path: Path) -> Path:
    """The run directory that owns PATH (PATH itself, or the run above a ladder variant folder)."""
    for candidate in (path, path.parent.parent):
        if (candidate / "recipe.resolved.yaml").is_file():
            return candidate
    return path


def _runtime(run_dir: Path, args: argparse.Namespace) -> RuntimeConfig:
    resolved = run_dir / "recipe.resolved.yaml"
    runtime = parse_recipe(yaml.safe_load(resolved.read_text())).runtime if resolved.is_file() else RuntimeConfig()
    if args.beam is not None:
        runtime = dataclasses.replace(runtime, decoding="beam" if args.beam > 1 else "greedy", beam_size=args.beam)
    return runtime


def _load(path: Path, run_dir: Path):
    from s2s_qat.tokenizer import TextCodec

    if (path / "encoder.tflite").is_file() and (path / "decoder_step.tflite").is_file():
        from s2s_qat.runtime.tflite_backend import TFLiteBackend

        tokenizer = path / "tokenizer.json" if (path / "tokenizer.json").is_file() else run_dir / "tokenizer"
        return TextCodec.load(tokenizer), TFLiteBackend(path / "encoder.tflite", path / "decoder_step.tflite")
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.runtime import KerasBackend

    core, codec = load_teacher(path)
    return codec, KerasBackend(core)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.translate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory (e.g. runs/tn_en_small) or a folder of .tflite graphs")
    parser.add_argument("texts", nargs="*", help="texts to translate (default: lines of standard input)")
    parser.add_argument("--beam", type=int, help="beam size (1: greedy); default from the run's recipe")
    args = parser.parse_args(argv)
    if args.beam is not None and args.beam < 1:
        parser.error("--beam must be >= 1")
    run_dir = _run_dir_of(args.run_dir)
    try:
        runtime = _runtime(run_dir, args)
    except RecipeError as err:
        print(f"error: {args.run_dir / 'recipe.resolved.yaml'}: {err}", file=sys.stderr)
        return 2
    from s2s_qat.runtime import Translator

    try:
        codec, backend = _load(args.run_dir, run_dir)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    translator = Translator.create(codec, backend, runtime)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    for text in texts:
        print(translator.translate(text))
    if translator.stats.truncated_sources:
        print(f"note: {translator.stats.truncated_sources} input(s) longer than {backend.source_length} tokens "
              f"were truncated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
