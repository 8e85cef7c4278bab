"""The run's teacher on every backend, side by side: Keras FP32, TFLite (float, dynamic-range, qat-int8) and
CTranslate2 (float32, int8) of the same weights exported as a MarianMTModel.

    python scripts/bench_ctranslate2.py RUN_DIR [--sentences N] [--threads 1 2] [--out JSON]

Same test sentences (the run's test split), same maximum lengths (S source tokens, T generated tokens), greedy,
batch 1; each backend and thread count is timed in its own process (`--worker`). Prints one table and writes JSON
(default benchmarks/<run name>_ctranslate2.json): BLEU, tokens/s (generated tokens, EOS included, over the time
of the encoder + decoding loop, tokenization excluded), size, and how many outputs equal the Keras FP32 ones.
Needs the `dev` extra (ctranslate2, and torch for its converter); the conversion is s2s_qat/interop/ct2.py.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TFLITE_VARIANTS = ("float-tflite", "dynamic-range", "qat-int8")
CT2_TYPES = ("float32", "int8")


def _sources(run_dir: Path, n: int | None) -> tuple[list[str], list[str]]:
    from s2s_qat.data import load_splits

    test = load_splits(run_dir / "data")["test"]
    n = len(test) if n is None else min(n, len(test))
    return list(test["source"][:n]), list(test["target"][:n])


def worker(backend: str, threads: int, run_dir: Path, n: int | None, out: Path) -> None:
    """Translate the sentences with one backend in this process; write hypotheses, tokens and seconds."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sources, _ = _sources(run_dir, n)
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.recipe import RuntimeConfig
    from s2s_qat.runtime import Translator

    if backend.startswith("ctranslate2-"):
        import ctranslate2

        from s2s_qat.models import TransformerConfig
        from s2s_qat.tokenizer import TextCodec

        codec = TextCodec.load(run_dir / "tokenizer")
        cfg = TransformerConfig.load(run_dir / "teacher" / "model" / "config.json")
        model = run_dir / "ctranslate2" / backend.split("-", 1)[1]
        translator = ctranslate2.Translator(str(model), device="cpu", inter_threads=1, intra_threads=threads)
        hyps, tokens, seconds = [], 0, 0.0
        for text in sources:
            ids = codec.encode_source(text, cfg.source_length).ids
            pieces = codec.tokenizer.convert_ids_to_tokens(ids)
            start = time.perf_counter()
            result = translator.translate_batch([pieces], beam_size=1, max_decoding_length=cfg.target_length,
                                                min_decoding_length=0)  # EOS may come first, as in the host loop
            seconds += time.perf_counter() - start
            out_pieces = result[0].hypotheses[0]
            tokens += len(out_pieces) + int(len(out_pieces) < cfg.target_length)  # + EOS when it stopped on one
            hyps.append(codec.decode(codec.tokenizer.convert_tokens_to_ids(out_pieces)))
        size = (model / "model.bin").stat().st_size
    else:
        if backend == "keras-fp32":
            import tensorflow as tf

            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            from s2s_qat.runtime import KerasBackend

            core, codec = load_teacher(run_dir)
            model = KerasBackend(core)
            size = int(sum(v.shape.num_elements() * 4 for v in core.weights))
        else:
            from s2s_qat.runtime.tflite_backend import TFLiteBackend
            from s2s_qat.tokenizer import TextCodec

            folder = _tflite_folder(run_dir, backend)
            codec = TextCodec.load(run_dir / "tokenizer")
            model = TFLiteBackend(folder / "encoder.tflite", folder / "decoder_step.tflite", num_threads=threads)
            size = sum((folder / f).stat().st_size for f in ("encoder.tflite", "decoder_step.tflite"))
        translator = Translator.create(codec, model, RuntimeConfig())  # greedy, up to T tokens
        hyps = [translator.translate(s) for s in sources]
        tokens, seconds = translator.stats.generated_tokens, translator.stats.seconds
    out.write_text(json.dumps({"hypotheses": hyps, "tokens": tokens, "seconds": seconds, "size_bytes": size}))


def _tflite_folder(run_dir: Path, variant: str) -> Path:
    """The ladder's graphs of `variant`, or for float-tflite (not in every ladder) this script's own export."""
    ladder = run_dir / "ladder" / variant
    return ladder if (ladder / "encoder.tflite").is_file() or variant != "float-tflite" else run_dir / "ctranslate2" / variant


def _prepare_float_tflite(run_dir: Path) -> None:
    """Export the teacher's float TFLite graphs when the run's ladder has none (so the table always has the row)."""
    folder = _tflite_folder(run_dir, "float-tflite")
    if (folder / "encoder.tflite").is_file():
        return
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from s2s_qat.export import convert
    from s2s_qat.models import build_decoder_step, build_encoder
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.validate.ladder import write_variant

    core, _ = load_teacher(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_variant("float-tflite", {"encoder": convert(build_encoder(core), "float"),
                                   "decoder_step": convert(build_decoder_step(core), "float")}, folder)


def _prepare_ctranslate2(run_dir: Path) -> tuple[dict[str, float], dict[str, str]]:
    """Export the teacher as a MarianMTModel and convert it to CTranslate2 float32 and int8 (once).
    Returns (conversion seconds, conversion errors) by type."""
    from s2s_qat.convert import export_hf

    hf = run_dir / "ctranslate2" / "hf"
    if not hf.is_dir():
        export_hf(run_dir, hf)
    from s2s_qat.interop.ct2 import convert_to_ctranslate2

    seconds, errors = {}, {}
    for kind in CT2_TYPES:
        target = run_dir / "ctranslate2" / kind
        if not (target / "model.bin").is_file():
            start = time.monotonic()
            try:
                convert_to_ctranslate2(hf, target, kind)
            except ValueError as err:
                errors[kind] = f"CTranslate2 conversion failed: {err}"
                continue
            seconds[kind] = time.monotonic() - start
    return seconds, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--sentences", type=int, help="first N test sentences (default: the whole test split)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", nargs=3, metavar=("BACKEND", "THREADS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.run_dir, args.sentences, Path(args.worker[2]))
        return 0
    args.run_dir = args.run_dir.resolve()  # the workers run from the repository root
    if not (args.run_dir / "teacher" / "model" / "config.json").is_file():
        print(f"error: {args.run_dir} holds no trained teacher", file=sys.stderr)
        return 2
    import sacrebleu

    convert_seconds, convert_errors = _prepare_ctranslate2(args.run_dir)
    _prepare_float_tflite(args.run_dir)
    _, references = _sources(args.run_dir, args.sentences)
    backends = ["keras-fp32"] + [v for v in TFLITE_VARIANTS
                                 if (_tflite_folder(args.run_dir, v) / "encoder.tflite").is_file()]
    backends += [f"ctranslate2-{k}" for k in CT2_TYPES]
    rows = []
    work = args.run_dir / "ctranslate2" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        for threads in args.threads:
            if backend.startswith("ctranslate2-") and backend.split("-", 1)[1] in convert_errors:
                rows.append({"backend": backend, "threads": threads, "error": convert_errors[backend.split("-", 1)[1]]})
                continue
            out = work / f"{backend}-{threads}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), str(args.run_dir), "--worker", backend, str(threads),
                   str(out)] + (["--sentences", str(args.sentences)] if args.sentences else [])
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                rows.append({"backend": backend, "threads": threads, "error": proc.stderr.strip().splitlines()[-1:]})
                continue
            r = json.loads(out.read_text())
            rows.append({"backend": backend, "threads": threads, "hypotheses": r["hypotheses"],
                         "bleu": sacrebleu.corpus_bleu(r["hypotheses"], [references]).score,
                         "tokens_per_second": r["tokens"] / r["seconds"], "size_bytes": r["size_bytes"],
                         "tokens": r["tokens"], "seconds": r["seconds"]})
    reference = next(r["hypotheses"] for r in rows if r["backend"] == "keras-fp32" and "hypotheses" in r)
    for r in rows:
        if "hypotheses" in r:
            same = [a == b for a, b in zip(r["hypotheses"], reference)]
            r["same_as_keras_fp32"] = sum(same) / len(same)
            r["first_differences"] = [{"index": i, "keras_fp32": reference[i], "output": r["hypotheses"][i]}
                                      for i, s in enumerate(same) if not s][:5]
    print(f"{'backend':22} {'threads':>7} {'BLEU':>7} {'tokens/s':>9} {'size (bytes)':>13} {'= Keras':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['backend']:22} {r['threads']:7d}  failed: {r['error']}")
            continue
        print(f"{r['backend']:22} {r['threads']:7d} {r['bleu']:7.2f} {r['tokens_per_second']:9.1f} "
              f"{r['size_bytes']:13,d} {100 * r['same_as_keras_fp32']:7.1f}%")
    result = {"run": str(args.run_dir), "command": "python scripts/bench_ctranslate2.py " + " ".join(argv or sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "sentences": len(references), "ctranslate2_convert_seconds": convert_seconds,
              "ctranslate2_convert_errors": convert_errors,
              "rows": [{k: v for k, v in r.items() if k != "hypotheses"} for r in rows]}
    out = args.out or ROOT / "benchmarks" / f"{args.run_dir.name}_ctranslate2.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
