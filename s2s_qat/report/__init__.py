"""report.json (stable keys, DESIGN section 7) and a readable report.md."""
from __future__ import annotations

import datetime
from pathlib import Path

from s2s_qat.atomic import write_json, write_text
from s2s_qat.validate import VariantResult


def build_report(recipe_name: str, variants: list[VariantResult], artifacts: dict | None, gates: dict,
                 data_stats: dict, training: dict | None, examples: list[dict]) -> dict:
    return {
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
    gates = report.get("gates") or {}
    lines += ["## Gates", ""]
    if gates.get("checks"):
        for c in gates["checks"]:
            lines.append(f"- {'PASS' if c['passed'] else 'FAIL'} {c['name']}: {c['value']:.4g} vs {c['threshold']:.4g}")
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


def write_report(run_dir: Path, report: dict) -> None:
    write_json(Path(run_dir) / "report.json", report)
    write_text(Path(run_dir) / "report.md", render_markdown(report))
