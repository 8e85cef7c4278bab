"""Host-side teacher decoding (QAT's teacher prefixes, distillation's sequence targets), side by side: the
key/value-cached decoder of s2s_qat/training/decode.py against re-running the decoder on the whole prefix each
step (the previous implementation, kept here as the baseline).

    python scripts/bench_decode.py RUN_DIR [--sources 256] [--beam 4] [--out JSON]

The run's training sources (the rows those stages decode), its FP32 teacher, one process. Prints a table and
writes JSON (default benchmarks/<run name>_decode.json): seconds, sources/s, speed-up over the baseline, and how
many outputs equal the baseline's (greedy) or the cached greedy's (beam, which only shows it is not greedy).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def recompute_greedy(core, input_ids: np.ndarray, attention_mask: np.ndarray, batch: int = 256) -> np.ndarray:
    """Greedy decoding that re-runs the teacher-forced graph on the prefix's own length every step (O(T^2)
    decoder work, the cross-attention keys and values projected again each step)."""
    import tensorflow as tf

    cfg = core.cfg

    @tf.function
    def last_logits(memory, mask, dec):
        positions = tf.range(dec.shape[1])[None, :] + tf.zeros_like(dec)
        return core.logits(core.decode(dec, tf.ones_like(dec), positions, memory, mask)[:, -1])

    encode = tf.function(lambda i, m: core.encode(i, m), reduce_retracing=True)
    out = np.full((len(input_ids), cfg.target_length), cfg.pad_token_id, np.int32)
    for start in range(0, len(input_ids), batch):
        ids, mask = input_ids[start:start + batch], attention_mask[start:start + batch]
        memory = encode(tf.constant(ids), tf.constant(mask))
        dec = np.full((len(ids), cfg.target_length), cfg.pad_token_id, np.int32)
        dec[:, 0] = cfg.bos_token_id
        done = np.zeros(len(ids), bool)
        for t in range(cfg.target_length):
            tokens = np.argmax(last_logits(memory, mask, dec[:, :t + 1]).numpy(), axis=-1).astype(np.int32)
            tokens[done] = cfg.pad_token_id
            out[start:start + len(ids), t] = tokens
            if t + 1 < cfg.target_length:
                dec[:, t + 1] = tokens
            done |= tokens == cfg.eos_token_id
            if done.all():
                break
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--sources", type=int, default=256)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from s2s_qat.data import load_splits
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.training.batches import encode_split
    from s2s_qat.training.decode import teacher_beam, teacher_greedy

    core, codec = load_teacher(args.run_dir)
    cfg = core.cfg
    train = load_splits(args.run_dir / "data")["train"]
    n = min(args.sources, len(train))
    split = encode_split(codec, list(train["source"][:n]), list(train["target"][:n]), cfg.source_length,
                         cfg.target_length)
    ids, mask = split.input_ids, split.attention_mask
    # one warm-up source per method, so tracing is not timed
    recompute_greedy(core, ids[:1], mask[:1])
    teacher_greedy(core, ids[:1], mask[:1], progress=False)
    teacher_beam(core, ids[:1], mask[:1], args.beam, progress=False)

    runs = {}
    for name, fn in (("recompute-greedy", lambda: recompute_greedy(core, ids, mask)),
                     ("cached-greedy", lambda: teacher_greedy(core, ids, mask, progress=False)),
                     (f"cached-beam{args.beam}", lambda: teacher_beam(core, ids, mask, args.beam, progress=False))):
        started = time.perf_counter()
        outputs = fn()
        runs[name] = (time.perf_counter() - started, outputs)
    base_seconds, base = runs["recompute-greedy"]
    greedy = runs["cached-greedy"][1]
    rows = []
    for name, (seconds, outputs) in runs.items():
        reference = greedy if name.startswith("cached-beam") else base
        rows.append({"method": name, "seconds": round(seconds, 2), "sources_per_second": round(n / seconds, 2),
                     "speedup_vs_recompute_greedy": round(base_seconds / seconds, 2),
                     "identical_to": "cached-greedy" if name.startswith("cached-beam") else "recompute-greedy",
                     "identical_fraction": float((outputs == reference).all(axis=1).mean())})
    result = {"command": f"python scripts/bench_decode.py {args.run_dir} --sources {args.sources} --beam {args.beam}",
              "run": args.run_dir.name, "sources": n, "target_length": cfg.target_length,
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "rows": rows}
    out = args.out or ROOT / "benchmarks" / f"{args.run_dir.name}_decode.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"{args.run_dir.name}: {n} training sources, T={cfg.target_length}")
    print(f"  {'method':<18} {'seconds':>8} {'sources/s':>10} {'speed-up':>9}  identical")
    for r in rows:
        print(f"  {r['method']:<18} {r['seconds']:>8.1f} {r['sources_per_second']:>10.2f} "
              f"{r['speedup_vs_recompute_greedy']:>8.1f}x  {100 * r['identical_fraction']:.1f}% vs {r['identical_to']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
