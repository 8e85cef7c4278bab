"""report.json (stable keys, DESIGN section 7) and a readable report.md."""
from __future__ import annotations

import datetime
from pathlib import Path

from s2s_qat.atomic import write_json, write_text, write_with
from s2s_qat.validate import VariantResult


def build_report(recipe_name: str, variants: list[VariantResult], artifacts: dict | None, gates: dict,
                 data_stats: dict, training: dict | None, examples: list[dict], qat: dict | None = None,
                 student: dict | None = None) -> dict:
    """`qat`: the teacher's QAT stage result; `student`: {"student", "student_gold", "qat"} stage results."""
    return {
        "qat": qat,
        "student": student,
        "recipe": recipe_name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "variants": [v.as_dict() for v in variants],
        "artifacts": artifacts,
        "gates": gates,
        "data": data_stats,
        "training": training,
        "examples": examples,
    }


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def render_markdown(report: dict) -> str:
    lines = [f"# Report: {report['recipe']}", "", f"Created {report['created']}.", "", "## Variants", "",
             "| variant | status | BLEU | chrF | exact match % | pair cosine | cosine to FP32 | argmax = FP32 | tokens/s | size (bytes) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for v in report["variants"]:
        s = v.get("source_sensitivity") or {}
        lines.append(f"| {v['name']} | {v['status']} | {_fmt(v['bleu'])} | {_fmt(v['chrf'])} | {_fmt(v['exact_match'])} "
                     f"| {_fmt(s.get('pair_cosine'), 3)} | {_fmt(s.get('cosine_to_fp32'), 3)} "
                     f"| {_fmt(s.get('argmax_agreement_fp32'), 3)} | {_fmt(v['tokens_per_second'], 1)} "
                     f"| {_fmt(v['size_bytes'])} |")
        if v.get("error"):
            lines.append(f"|  | error: {v['error']} | | | | | | | | |")
    lines += ["", "Pair cosine: mean centered cosine between the first-step logits of different sources "
              "(near 1.0 means the decoder ignores its source).", ""]
    data = report.get("data") or {}
    if data:
        lines += ["## Data", "", "| split | rows | truncated sources | truncated targets |", "|---|---|---|---|"]
        for split, st in data.get("splits", {}).items():
            lines.append(f"| {split} | {st['rows']} | {st.get('truncated_sources', '-')} | {st.get('truncated_targets', '-')} |")
        lines.append("")
    tr = report.get("training")
    if tr:
        lines += ["## Teacher training", "", f"Steps {tr['steps']} (best {tr['best_step']}), best validation loss "
                  f"{tr['best_val_loss']:.4f}, stopped by {tr['stop_reason']}, {tr['seconds']:.0f} s "
                  f"(this invocation; resumed from step {tr['resumed_from']}).", ""]
    lines += _qat_lines(report.get("qat"))
    lines += _student_lines(report.get("student"), report["variants"])
    if report.get("plot"):
        lines += [f"![BLEU and pair cosine per variant]({report['plot']})", ""]
    lines += _localization_lines(report)
    art = report.get("artifacts") or {}
    lines += ["## Artifacts", ""]
    if art.get("dir"):
        lines.append(f"`{art['dir']}` from variant `{art['variant']}` (encoder.tflite, decoder_step.tflite, "
                     f"tokenizer.json, manifest.json).")
    else:
        lines.append(f"None published: variant `{art.get('variant')}` {art.get('withheld', 'not exported')}.")
    lines.append("")
    gates = report.get("gates") or {}
    lines += ["## Gates", ""]
    if gates.get("checks"):
        lines.append(f"Checked on `{gates.get('variant', '-')}`: {'all passed' if gates['passed'] else 'FAILED'}.")
        lines.append("")
        for c in gates["checks"]:
            lines.append(f"- {'PASS' if c['passed'] else 'FAIL'} `{c['name']}`: {c['message']}")
    else:
        lines.append("No gates configured.")
    lines.append("")
    if report.get("examples"):
        lines += ["## Examples (test split, FP32)", "", "| source | reference | output |", "|---|---|---|"]
        for ex in report["examples"]:
            cells = [ex[k].replace("|", "\\|") for k in ("source", "reference", "output")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _student_lines(student: dict | None, variants: list[dict]) -> list[str]:
    if not student:
        return []
    st = student["student"]
    tr = st["training"]
    ratio = st["parameters"] / st["teacher_parameters"]
    lines = ["## Student (distillation)", "",
             f"{st['parameters']:,} parameters ({ratio:.2f} x the teacher's {st['teacher_parameters']:,}); steps "
             f"{tr['steps']} (best {tr['best_step']}), best validation loss {tr['best_val_loss']:.4f}, stopped by "
             f"{tr['stop_reason']}; stage {st['seconds']:.0f} s."]
    gold_stage = student.get("student_gold")
    if gold_stage:
        gt = gold_stage["training"]
        lines.append(f"Gold-only baseline (same architecture and initial weights): steps {gt['steps']}, best validation "
                     f"loss {gt['best_val_loss']:.4f}, stopped by {gt['stop_reason']}; stage {gold_stage['seconds']:.0f} s.")
    seq = st.get("sequence_targets")
    if seq:
        how = "decoded in this run" if seq["decoded"] else "reused from sequence_targets/"
        lines.append(f"Sequence-level targets: teacher beam search (beam {seq['beam_size']}) on {seq['rows']} training "
                     f"sources, {seq['decode_seconds']:.0f} s, {how}.")
    by_name = {v["name"]: v for v in variants}
    rows = [by_name[n] for n in ("fp32", "student-fp32", "student-gold-fp32", "student-qat-int8") if n in by_name]
    lines += ["", "| model | BLEU | exact match % | size (bytes) | tokens/s |", "|---|---|---|---|---|"]
    for v in rows:
        label = {"fp32": "teacher fp32", "student-fp32": "student fp32 (distilled)",
                 "student-gold-fp32": "student fp32 (gold data only)", "student-qat-int8": "student QAT int8"}[v["name"]]
        lines.append(f"| {label} | {_fmt(v['bleu'])} | {_fmt(v['exact_match'])} | {_fmt(v['size_bytes'])} "
                     f"| {_fmt(v['tokens_per_second'], 1)} |")
    distilled, gold = by_name.get("student-fp32"), by_name.get("student-gold-fp32")
    if distilled and gold and distilled.get("bleu") is not None and gold.get("bleu") is not None:
        steps = (f"{tr['steps']} vs {gold_stage['training']['steps']} steps" if gold_stage
                 else f"{tr['steps']} steps distilled")
        lines += ["", f"Gain from distillation (same architecture, same `distill.train` budget: {steps}): "
                      f"{distilled['bleu'] - gold['bleu']:+.2f} BLEU."]
    lines.append("")
    if student.get("qat"):
        lines += _qat_lines(student["qat"], "Student QAT")
    return lines


def _phases(qat: dict) -> str:
    phases = qat.get("phase_seconds")
    if not phases:  # a result written before phases were timed
        return "calibration, training, export, parity"
    return ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in phases)


def _qat_lines(qat: dict | None, title: str = "Quantization-aware training") -> list[str]:
    if not qat:
        return []
    tr, p = qat["training"], qat["parity"]
    lines = [f"## {title}", "",
             f"{qat['quantizers']} quantizers; steps {tr['steps']} (best {tr['best_step']}), best validation loss of "
             f"the fake-quantized model {tr['best_val_loss']:.4f}, stopped by {tr['stop_reason']}; stage "
             f"{qat['seconds']:.0f} s ({_phases(qat)}).", "",
             f"Parity ({'passed' if p['passed'] else 'FAILED'}): QAT Keras vs its full-INT8 TFLite export on "
             f"{p['sentences']} test sentences: first-step logits cosine mean {p['mean_cosine']:.5f} (min "
             f"{p['min_cosine']:.5f}), identical greedy outputs {100 * p['identical_greedy']:.1f}%, identity "
             f"boundary: {p['boundary_identity']}.", ""]
    if p.get("first_difference"):
        lines += ["| source | QAT Keras | TFLite |", "|---|---|---|"]
        for d in p["first_difference"]:
            lines.append("| " + " | ".join(d[k].replace("|", "\\|") for k in ("source", "keras", "tflite")) + " |")
        lines.append("")
    return lines


def _localization_lines(report: dict) -> list[str]:
    rows = [(v["name"], v["extra"]["localization"]) for v in report["variants"]
            if (v.get("extra") or {}).get("localization")]
    if not rows:
        return []
    lines = ["## Localization: where the INT8 error starts", "",
             "Each int8 tensor against its float twin (the same Keras graph converted to float TFLite, same inputs: "
             "calibration rows, FP32 encoder states for the decoder). Relative RMSE = RMSE / RMS of the float "
             "tensor, accumulated along the graph (1.0: the int8 tensor carries nothing of the float one); "
             "`added` = that error minus the largest error among the op's inputs, i.e. what this op adds. Sorted "
             "by `added`: the top rows are where the error starts. Worst ten per full-INT8 variant (all tensors in "
             "`ladder/<variant>/localization.json`).", ""]
    for name, worst in rows:
        lines += [f"### {name}", "", "| graph | tensor | op | added | relative RMSE | RMSE in int8 steps | scale |",
                  "|---|---|---|---|---|---|---|"]
        for r in worst:
            lines.append(f"| {r['graph']} | {r['label']} | {r['op']} | {r['added']:.3f} | {r['relative_rmse']:.3f} "
                         f"| {r['rmse_over_scale']:.2f} | {r['scale']:.3g} |")
        lines.append("")
    return lines


PLOT_FILE = "report_ladder.png"


def write_plot(path: Path, variants: list[dict]) -> bool:
    """Bars of BLEU and pair cosine per variant (ok rows; failed rows marked); False when nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v["name"] for v in variants]
    if not names:
        return False
    bleu = [v["bleu"] if v["status"] == "ok" and v["bleu"] is not None else 0.0 for v in variants]
    pair = [(v.get("source_sensitivity") or {}).get("pair_cosine") or 0.0 for v in variants]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 1.3 * len(names) * 2), 4.2))
    x = range(len(names))
    ax1.bar(x, bleu, color=["#4c72b0" if v["status"] == "ok" else "#bbbbbb" for v in variants])
    ax1.set_title("test BLEU (grey: failed)")
    ax1.set_ylim(0, 100)
    ax2.bar(x, pair, color="#dd8452")
    ax2.set_title("pair cosine of first-step logits (1.0 = source-blind)")
    ax2.set_ylim(-0.1, 1.0)
    for ax in (ax1, ax2):
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, rotation=35, ha="right", fontsize=8)
    fig.tight_layout()
    try:
        write_with(Path(path), lambda tmp: fig.savefig(tmp, dpi=100))
    finally:
        plt.close(fig)
    return True


def write_report(run_dir: Path, report: dict) -> None:
    run_dir = Path(run_dir)
    if write_plot(run_dir / PLOT_FILE, report["variants"]):
        report["plot"] = PLOT_FILE
    write_json(run_dir / "report.json", report)
    write_text(run_dir / "report.md", render_markdown(report))
