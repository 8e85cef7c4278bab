"""`python -m s2s_qat.translate PATH "text" ...`: translate through the host generation loop.

PATH is a run directory (the FP32 teacher, Keras backend) or a folder holding `encoder.tflite` and
`decoder_step.tflite` (an `artifacts/` folder or a ladder variant `runs/<name>/ladder/<variant>`; TFLite backend).
Texts come from the arguments, or one per line from standard input when none is given.
Exit status 2 when PATH holds neither a trained teacher nor TFLite graphs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from s2s_qat.recipe import RecipeError
from s2s_qat.runtime.loading import open_model, runtime_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.translate", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run directory (e.g. runs/tn_en_small) or a folder of .tflite graphs")
    parser.add_argument("texts", nargs="*", help="texts to translate (default: lines of standard input)")
    parser.add_argument("--beam", type=int, help="beam size (1: greedy); default from the run's recipe")
    parser.add_argument("--backend", choices=("auto", "keras", "tflite"), default="auto",
                        help="auto: TFLite for a folder of graphs, Keras (the FP32 teacher) for a run directory; "
                             "tflite on a run directory: its artifacts/")
    args = parser.parse_intermixed_args(argv)  # options may follow the path, before the texts
    if args.beam is not None and args.beam < 1:
        parser.error("--beam must be >= 1")
    try:
        runtime = runtime_settings(args.run_dir, args.beam)
    except RecipeError as err:
        print(f"error: decoding settings for {args.run_dir}: {err}", file=sys.stderr)
        return 2
    from s2s_qat.runtime import Translator

    try:
        codec, backend = open_model(args.run_dir, args.backend)
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
