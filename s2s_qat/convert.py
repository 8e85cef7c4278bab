"""`python -m s2s_qat.convert`: Hugging Face checkpoints in and out.

    python -m s2s_qat.convert hf CHECKPOINT_DIR --out RUN_DIR [--source-length S] [--target-length T]
    python -m s2s_qat.convert to-hf RUN_DIR --out DIR

`hf` takes a MarianMTModel or BartForConditionalGeneration directory (config.json, model.safetensors or
pytorch_model.bin, tokenizer files) into RUN_DIR/teacher/model and RUN_DIR/tokenizer (the checkpoint's own
tokenizer), so `translate RUN_DIR` runs it on the deployment graphs. `to-hf` writes a run's FP32 teacher as a
MarianMTModel directory (config.json, model.safetensors, tokenizer) that transformers loads and generates with.
Exit status 2 on a checkpoint or run that cannot be converted (every problem listed), or an existing output.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_LENGTH = 128


def import_hf(checkpoint: Path, run_dir: Path, source_length: int, target_length: int) -> None:
    from transformers import AutoTokenizer

    from s2s_qat.interop.hf import import_checkpoint
    from s2s_qat.pipeline import RunPaths, save_model
    from s2s_qat.tokenizer import save_checkpoint_tokenizer

    core = import_checkpoint(checkpoint, source_length, target_length)
    tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    paths = RunPaths(run_dir)
    cfg = core.cfg
    save_checkpoint_tokenizer(tokenizer, paths.tokenizer, cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id)
    save_model(core, paths.teacher_model)
    (paths.teacher / "imported_from.json").write_text(json.dumps({"checkpoint": str(Path(checkpoint).resolve())}) + "\n")


def export_hf(run_dir: Path, out: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    from s2s_qat.atomic import fresh_temp_dir, publish_dir
    from s2s_qat.interop.hf import export_marian
    from s2s_qat.pipeline import load_teacher

    core, codec = load_teacher(run_dir)
    tmp = fresh_temp_dir(out)
    export_marian(core, tmp)
    tokenizer = codec.tokenizer
    if isinstance(tokenizer, PreTrainedTokenizerFast) and not codec.own_specials:
        tokenizer.model_max_length = max(core.cfg.source_length, core.cfg.target_length)
    tokenizer.save_pretrained(str(tmp))
    config = json.loads((tmp / "config.json").read_text())
    config["max_length"] = core.cfg.target_length + 1  # generate() stops where the host loop does (start + T tokens)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    publish_dir(tmp, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m s2s_qat.convert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    hf = sub.add_parser("hf", help="import a Marian or BART checkpoint directory as a run's teacher")
    hf.add_argument("checkpoint", type=Path)
    hf.add_argument("--out", type=Path, required=True, help="run directory to create")
    hf.add_argument("--source-length", type=int, default=DEFAULT_LENGTH, help="S of the deployment graphs")
    hf.add_argument("--target-length", type=int, default=DEFAULT_LENGTH, help="T of the deployment graphs")
    to = sub.add_parser("to-hf", help="write a run's FP32 teacher as a MarianMTModel directory")
    to.add_argument("run_dir", type=Path)
    to.add_argument("--out", type=Path, required=True, help="directory to create")
    args = parser.parse_args(argv)

    from s2s_qat.interop.hf import CheckpointError

    try:
        if args.command == "hf":
            if not args.checkpoint.is_dir():
                raise CheckpointError(str(args.checkpoint), ["not a directory"])
            if (args.out / "teacher" / "model").exists():
                print(f"error: {args.out / 'teacher' / 'model'} exists; choose another --out", file=sys.stderr)
                return 2
            import_hf(args.checkpoint, args.out, args.source_length, args.target_length)
        else:
            if args.out.exists():
                print(f"error: {args.out} exists; choose another --out", file=sys.stderr)
                return 2
            export_hf(args.run_dir, args.out)
    except (CheckpointError, FileNotFoundError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
