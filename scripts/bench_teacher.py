"""Run (or resume) a recipe's pipeline and record its teacher, ladder, QAT and student numbers in benchmarks/<name>.json.

    python scripts/bench_teacher.py recipes/tn_en_bench.yaml [--run-dir runs/tn_en_bench]

Stages already completed in the run directory are skipped by the pipeline, so this can also be pointed at a
finished run. Prints a table and writes JSON (sorted keys).
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("--run-dir", type=Path)
    parser.add_argument("--out", type=Path, help="JSON path (default: benchmarks/<recipe name>.json)")
    args = parser.parse_args()
    name = yaml.safe_load(args.recipe.read_text())["name"]
    run_dir = args.run_dir or ROOT / "runs" / name
    command = [sys.executable, "-m", "s2s_qat.train", str(args.recipe), "--run-dir", str(run_dir), "--no-progress"]
    started = time.monotonic()
    proc = subprocess.run(command, cwd=ROOT)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1):
        return proc.returncode
    report = json.loads((run_dir / "report.json").read_text())
    training = json.loads((run_dir / "teacher" / "train_result.json").read_text())
    fp32 = next(v for v in report["variants"] if v["name"] == "fp32")
    teacher_cfg = json.loads((run_dir / "teacher" / "model" / "config.json").read_text())
    params = fp32["size_bytes"] // 4
    result = {
        "recipe": name,
        "command": f"python scripts/bench_teacher.py {args.recipe}",
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "model": {k: teacher_cfg[k] for k in ("d_model", "encoder_layers", "decoder_layers", "attention_heads",
                                             "ffn_dim", "vocab_size", "source_length", "target_length")},
        "parameters": params,
        "training": training,
        "this_invocation_wall_seconds": wall,
        "fp32": {k: fp32[k] for k in ("bleu", "chrf", "exact_match", "source_sensitivity", "tokens_per_second")},
        "test_sentences": fp32["extra"]["sentences"],
        "ladder": [{k: v.get(k) for k in ("name", "status", "error", "bleu", "chrf", "exact_match", "source_sensitivity",
                                          "float_ops", "quantize_ops", "size_bytes", "tokens_per_second")}
                   for v in report["variants"]],
        "data": report["data"],
        "gates": report["gates"],
        "artifacts": report.get("artifacts"),
        "qat": report.get("qat"),
        "student": report.get("student"),
    }
    out = args.out or ROOT / "benchmarks" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    rows = [("parameters", f"{params:,}"), ("train steps", training["steps"]),
            ("train minutes", f"{training['seconds'] / 60:.1f}"), ("stopped by", training["stop_reason"]),
            ("BLEU", f"{fp32['bleu']:.2f}"), ("chrF", f"{fp32['chrf']:.2f}"),
            ("exact match %", f"{fp32['exact_match']:.1f}"),
            ("pair cosine", f"{fp32['source_sensitivity']['pair_cosine']:.3f}"),
            ("tokens/s (Keras, batch 1)", f"{fp32['tokens_per_second']:.1f}")]
    qat = report.get("qat")
    by_name = {v["name"]: v for v in report["variants"]}
    if qat and by_name.get("qat-int8", {}).get("status") == "ok":
        q = by_name["qat-int8"]
        rows += [("qat-int8 BLEU", f"{q['bleu']:.2f} ({q['bleu'] - fp32['bleu']:+.2f} vs fp32)"),
                 ("qat-int8 exact match %", f"{q['exact_match']:.1f}"),
                 ("QAT train minutes (this invocation)", f"{qat['training']['seconds'] / 60:.1f} "
                                       f"({qat['training']['seconds'] / training['seconds']:.2f} x teacher)"),
                 ("QAT stage minutes: producing / all", f"{qat.get('producing_seconds', float('nan')) / 60:.1f} "
                  f"({qat.get('producing_seconds', float('nan')) / training['seconds']:.2f} x teacher) / "
                  f"{qat['seconds'] / 60:.1f} ({qat['seconds'] / training['seconds']:.2f} x teacher)"),
                 ("QAT parity cosine / identical", f"{qat['parity']['mean_cosine']:.5f} / "
                                                   f"{100 * qat['parity']['identical_greedy']:.1f}%")]
    student = report.get("student")
    if student:
        st = student["student"]
        rows.append(("student parameters", f"{st['parameters']:,} ({st['parameters'] / st['teacher_parameters']:.2f} "
                                           f"x teacher)"))
        for variant in ("student-fp32", "student-gold-fp32", "student-qat-int8"):
            v = by_name.get(variant)
            if v and v["status"] == "ok":
                rows.append((f"{variant} BLEU / exact % / tokens/s / bytes",
                             f"{v['bleu']:.2f} ({v['bleu'] - fp32['bleu']:+.2f} vs fp32) / {v['exact_match']:.1f} / "
                             f"{v['tokens_per_second']:.1f} / {v['size_bytes']:,}"))
    width = max(len(k) for k, _ in rows)
    print(f"{name} (fp32 teacher)")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
