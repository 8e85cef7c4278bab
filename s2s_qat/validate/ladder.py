"""The diagnostic ladder (DESIGN sections 5 and 7): export each variant, evaluate it in a child process.

A child process per variant means an interpreter abort (a missing int16 kernel, say) becomes a `failed` row
with its error text, never a crashed run.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from s2s_qat.atomic import write_bytes
from s2s_qat.export import convert, inventory
from s2s_qat.export.calibration import CalibrationSet, generation_state_calibration, naive_calibration
from s2s_qat.models import Seq2SeqCore, build_decoder_step, build_encoder
from s2s_qat.recipe import Recipe
from s2s_qat.runtime import KerasBackend, Translator
from s2s_qat.tokenizer import TextCodec
from s2s_qat.validate.evaluate import VariantResult


@dataclass(frozen=True)
class Rung:
    encoder_mode: str
    decoder_mode: str
    reference: bool = False        # quantize the reference graph (large mask, standard LayerNorm)
    calibration: str | None = None  # "naive" | "generation"


RUNGS = {
    "float-tflite": Rung("float", "float"),
    "dynamic-range": Rung("dynamic", "dynamic"),
    "ptq-int8-naive": Rung("int8", "int8", reference=True, calibration="naive"),
    "ptq-int8": Rung("int8", "int8", calibration="generation"),
    "int16x8": Rung("int16x8", "int16x8", calibration="generation"),
    "int8-enc+fp32-dec": Rung("int8", "float", calibration="generation"),
    "fp32-enc+int8-dec": Rung("float", "int8", calibration="generation"),
}


class LadderExporter:
    """Converts each (graph kind, mode, reference, calibration) once; variants share conversions."""

    def __init__(self, core: Seq2SeqCore, calibrations: dict[str, CalibrationSet]):
        self.core, self.calibrations, self._cache = core, calibrations, {}

    def graph(self, kind: str, mode: str, reference: bool, calibration: str | None) -> bytes:
        key = (kind, mode, reference, calibration if mode in ("int8", "int16x8") else None)
        if key not in self._cache:
            model = (build_encoder if kind == "encoder" else build_decoder_step)(self.core, reference=reference)
            rows = None
            if key[3] is not None:
                calib = self.calibrations[key[3]]
                rows = calib.encoder if kind == "encoder" else calib.decoder
            self._cache[key] = convert(model, mode, (lambda r=rows: iter(r)) if rows is not None else None)
        return self._cache[key]


def calibration_file(kind: str) -> str:
    return f"calibration-{kind}.npz"


def localized_graphs(rung: Rung) -> list[str]:
    """Graph kinds compared against float by the localization: full-INT8 variants only."""
    return ["encoder", "decoder_step"] if rung.encoder_mode == rung.decoder_mode == "int8" else []


def teacher_outputs(fp32: KerasBackend, codec: TextCodec, recipe: Recipe, sources: list[str]) -> list[list[int]]:
    translator = Translator.create(codec, fp32, recipe.runtime)
    return [list(h.tokens) if (h := translator.hypothesis(s)) is not None else [] for s in sources]


def export_rungs(core: Seq2SeqCore, keras: KerasBackend, codec: TextCodec, recipe: Recipe, calib_sources: list[str],
                 calib_targets: list[str], names: list[str], out_dir: Path, progress: bool = True) -> dict[str, dict]:
    """Write ladder/<variant>/{encoder,decoder_step}.tflite; returns per-variant inventory (or the export error).
    `keras` is the FP32 backend of `core` (encoder states and teacher outputs for calibration)."""
    lad = recipe.ladder
    sources, targets = calib_sources[: lad.calibration_sources], calib_targets[: lad.calibration_sources]
    needed = {RUNGS[n].calibration for n in names} - {None}
    calibrations = {}
    if "naive" in needed:
        calibrations["naive"] = naive_calibration(keras, codec, sources)
    if "generation" in needed:
        outputs = teacher_outputs(keras, codec, recipe, sources)
        calibrations["generation"] = generation_state_calibration(keras, codec, sources, targets, outputs,
                                                                  lad.calibration_prefixes)
    for kind, calib in calibrations.items():  # the children's localization re-uses the exact sets
        calib.save(out_dir / calibration_file(kind))
    exporter = LadderExporter(core, calibrations)
    info = {}
    for name in tqdm(names, desc="export ladder", unit="variant", disable=not progress, dynamic_ncols=True):
        rung, directory = RUNGS[name], out_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        try:
            blobs = {"encoder": exporter.graph("encoder", rung.encoder_mode, rung.reference, rung.calibration),
                     "decoder_step": exporter.graph("decoder_step", rung.decoder_mode, rung.reference, rung.calibration)}
        except Exception as err:  # a converter failure is this variant's result, reported in its row
            info[name] = {"error": f"export failed: {type(err).__name__}: {err}"}
            continue
        info[name] = write_variant(name, blobs, directory)
    return info


def write_variant(name: str, blobs: dict[str, bytes], directory: Path) -> dict:
    """Write ladder/<variant>/{encoder,decoder_step}.tflite; returns the variant's summed op inventory."""
    counts: dict[str, int] = {}
    float_ops = quantize_ops = 0
    for kind, blob in blobs.items():
        write_bytes(directory / f"{kind}.tflite", blob)
        inv = inventory(blob, f"{name}/{kind}")
        float_ops += inv.float_ops
        quantize_ops += inv.quantize_ops
        for op, n in inv.op_counts.items():
            counts[op] = counts.get(op, 0) + n
    return {"float_ops": float_ops, "quantize_ops": quantize_ops, "op_counts": counts,
            "size_bytes": sum(len(b) for b in blobs.values())}


def evaluate_in_child(name: str, run_dir: Path, variant_dir: Path, timeout_s: float = 3600) -> VariantResult:
    """Run `python -m s2s_qat.validate.ladder_worker` on one variant; failures become a failed row."""
    cmd = [sys.executable, "-m", "s2s_qat.validate.ladder_worker", str(run_dir), str(variant_dir), name]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return VariantResult(name=name, status="failed", error=f"evaluation timed out after {timeout_s:.0f} s")
    metrics = variant_dir / "metrics.json"
    if proc.returncode != 0 or not metrics.is_file():
        tail = "\n".join(line for line in proc.stderr.strip().splitlines()[-6:])
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return VariantResult(name=name, status="failed", error=f"interpreter process ended with {how}: {tail}")
    return VariantResult(**json.loads(metrics.read_text()))


def save_fp32_first_logits(run_dir: Path, logits: np.ndarray) -> None:
    (run_dir / "ladder").mkdir(parents=True, exist_ok=True)
    np.save(run_dir / "ladder" / "fp32_first_step_logits.npy", logits)
