"""The pipeline: recipe -> data -> tokenizer -> teacher -> QAT -> evaluation (ladder) -> artifacts + gates -> report.

Each stage writes under `runs/<name>/<stage>/` and a `stage.json` holding the hash of its recipe
sections and of its inputs; a stage whose hash is unchanged is skipped on re-run.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras
from tqdm.auto import tqdm

from s2s_qat.atomic import fresh_temp_dir, publish_dir, write_json, write_text, write_with
from s2s_qat.data import build_splits, load_splits, save_splits
from s2s_qat.models import Seq2SeqCore, TransformerConfig, build_core, teacher_forced_logits
from s2s_qat.qat import attach_quantization, calibrate, range_table
from s2s_qat.qat.export import Parity, export_qat, localize_qat, parity_check
from s2s_qat.qat.train import (MixedPrefixSplit, outputs_as_split, outputs_digest, qat_loss, qat_train_config,
                               teacher_greedy)
from s2s_qat.export.manifest import build_manifest, write_artifacts
from s2s_qat.recipe import Recipe, dump_resolved, to_dict
from s2s_qat.report import build_report, write_report
from s2s_qat.runtime import KerasBackend
from s2s_qat.tokenizer import TextCodec, save_tokenizer, train_tokenizer
from s2s_qat.training import Trainer, cross_entropy_loss, encode_split, make_strategy, save_result
from s2s_qat.training.batches import BatchOrder
from s2s_qat.validate import VariantResult, evaluate_variant
from s2s_qat.validate.gates import artifact_variant, check_gates
from s2s_qat.validate.ladder import RUNGS, evaluate_in_child, export_rungs, save_fp32_first_logits, write_variant
from s2s_qat.validate.localize import LOCALIZATION_TOP

log = logging.getLogger("s2s_qat")
STAGE_FILE = "stage.json"


# === Stage bookkeeping ===

def _stage_hash(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def stage_is_current(directory: Path, digest: str) -> bool:
    marker = directory / STAGE_FILE
    if not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("hash") == digest
    except json.JSONDecodeError:
        return False


def mark_stage(directory: Path, digest: str, **info) -> None:
    write_json(directory / STAGE_FILE, {"hash": digest, **info})


def _set_aside(directory: Path) -> None:
    """Keep an outdated stage's files (nothing is deleted) and start that stage afresh."""
    if directory.exists():
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        aside = directory.with_name(f"{directory.name}.stale-{stamp}")
        directory.rename(aside)
        log.warning("recipe changed: moved %s to %s", directory, aside)


# === Stages ===

@dataclass
class RunPaths:
    root: Path

    @property
    def data(self) -> Path: return self.root / "data"
    @property
    def tokenizer(self) -> Path: return self.root / "tokenizer"
    @property
    def teacher(self) -> Path: return self.root / "teacher"
    @property
    def teacher_model(self) -> Path: return self.root / "teacher" / "model"
    @property
    def qat(self) -> Path: return self.root / "qat"


def stage_data(recipe: Recipe, paths: RunPaths) -> str:
    digest = _stage_hash("data", recipe.section_hash("data"))
    if stage_is_current(paths.data, digest):
        log.info("data: unchanged, skipped")
        return digest
    splits = build_splits(recipe.data, recipe.seed)
    tmp = fresh_temp_dir(paths.data)
    save_splits(splits, tmp)
    write_json(tmp / STAGE_FILE, {"hash": digest, "rows": {k: len(v) for k, v in splits.items()}})
    publish_dir(tmp, paths.data)
    log.info("data: %s", {k: len(v) for k, v in splits.items()})
    return digest


def stage_tokenizer(recipe: Recipe, paths: RunPaths, data_digest: str) -> str:
    digest = _stage_hash("tokenizer", recipe.section_hash("tokenizer"), data_digest)
    if stage_is_current(paths.tokenizer, digest):
        log.info("tokenizer: unchanged, skipped")
        return digest
    train = load_splits(paths.data)["train"]
    texts = (t for row in train for t in (row["source"], row["target"]))
    tok = train_tokenizer(recipe.tokenizer, texts)
    save_tokenizer(tok, paths.tokenizer / "tokenizer.json")
    mark_stage(paths.tokenizer, digest, vocab_size=tok.get_vocab_size())
    log.info("tokenizer: %d pieces", tok.get_vocab_size())
    return digest


def encode_splits(recipe: Recipe, paths: RunPaths, codec: TextCodec, names=("train", "validation")) -> dict:
    splits = load_splits(paths.data)
    m = recipe.model
    return {n: encode_split(codec, splits[n]["source"], splits[n]["target"], m.source_length, m.target_length)
            for n in names}


def _start_stage(directory: Path, digest: str) -> None:
    """Resume a stage started with the same inputs; set aside one started with other inputs."""
    started_file = directory / "started.json"
    if directory.exists() and (not started_file.is_file()
                               or json.loads(started_file.read_text()).get("hash") != digest):
        _set_aside(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(started_file, {"hash": digest})


def stage_teacher(recipe: Recipe, paths: RunPaths, tok_digest: str, progress: bool = True,
                  stop_after: int | None = None) -> tuple[str, dict | None]:
    digest = _stage_hash("teacher", recipe.section_hash("model", "teacher", "train"), tok_digest)
    if stage_is_current(paths.teacher, digest):
        log.info("teacher: unchanged, skipped")
        return digest, json.loads((paths.teacher / "train_result.json").read_text())
    _start_stage(paths.teacher, digest)

    codec = TextCodec.load(paths.tokenizer)
    cfg = TransformerConfig.from_recipe(recipe.model, codec.vocab_size)
    encoded = encode_splits(recipe, paths, codec)
    strategy = make_strategy(recipe.train.strategy)
    tf_keras.utils.set_random_seed(recipe.seed)
    if recipe.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    with strategy.scope():
        core = build_core(cfg)
    trainer = Trainer(core, recipe.train, encoded["train"], encoded["validation"], paths.teacher, recipe.seed,
                      loss_fn=cross_entropy_loss(recipe.train.label_smoothing), eval_loss_fn=cross_entropy_loss(0.0),
                      strategy=strategy, progress=progress)
    result = trainer.run(stop_after=stop_after)
    if result.stop_reason == "interrupted":
        return digest, None
    save_model(core, paths.teacher_model)
    save_result(result, paths.teacher / "train_result.json")
    mark_stage(paths.teacher, digest, steps=result.steps, best_val_loss=result.best_val_loss)
    log.info("teacher: %d steps, best validation loss %.4f (%s)", result.steps, result.best_val_loss,
             result.stop_reason)
    return digest, asdict(result)


def save_model(core: Seq2SeqCore, directory: Path) -> None:
    """config.json + checkpoint, published atomically (the teacher's model/ and the QAT model/ with its ranges)."""
    tmp = fresh_temp_dir(directory)
    write_text(tmp / "config.json", core.cfg.to_json())
    tf.train.Checkpoint(core=core).write(str(tmp / "weights"))
    publish_dir(tmp, directory)


def load_teacher(run_dir: Path) -> tuple[Seq2SeqCore, TextCodec]:
    paths = RunPaths(Path(run_dir))
    if not (paths.teacher_model / "config.json").is_file():
        raise FileNotFoundError(f"{paths.teacher_model} holds no trained teacher (config.json missing); "
                                f"run `python -m s2s_qat.train RECIPE` first")
    cfg = TransformerConfig.load(paths.teacher_model / "config.json")
    core = build_core(cfg)
    tf.train.Checkpoint(core=core).read(str(paths.teacher_model / "weights")).assert_existing_objects_matched()
    return core, TextCodec.load(paths.tokenizer)


def _teacher_prefixes(recipe: Recipe, paths: RunPaths, teacher: Seq2SeqCore, train, teacher_digest: str,
                      codec: TextCodec, progress: bool):
    """The teacher's greedy outputs for the first `qat.teacher_prefix_rows` training sources, decoded once and
    cached in qat/teacher_outputs.npz (reused while the teacher and the row count are unchanged)."""
    rows = min(recipe.qat.teacher_prefix_rows, len(train))
    cache = paths.qat / "teacher_outputs.npz"
    digest = outputs_digest(teacher_digest, rows)
    outputs = None
    if cache.is_file():
        with np.load(cache) as data:
            if str(data["digest"]) == digest:
                outputs = data["outputs"]
                log.info("qat: %d teacher outputs reused from %s", rows, cache)
    if outputs is None:
        outputs = teacher_greedy(teacher, train.input_ids[:rows], train.attention_mask[:rows], progress)
        write_with(cache, lambda tmp: np.savez(tmp, outputs=outputs, digest=np.array(digest)))
    return outputs_as_split(train.input_ids[:rows], train.attention_mask[:rows], outputs, codec.bos_id, codec.pad_id)


def stage_qat(recipe: Recipe, paths: RunPaths, teacher_digest: str, progress: bool = True,
              stop_after: int | None = None) -> tuple[str, dict | None]:
    """QAT of the deployment graphs from the teacher's weights -> qat/model (weights + ranges), qat/export/*.tflite
    (full-INT8, no representative dataset) and qat/result.json (training, parity, inventory)."""
    q = recipe.qat
    # Parity thresholds are judged at evaluation time: changing them must not retrain.
    trained_by = {k: v for k, v in to_dict(q).items() if not k.startswith("parity_")}
    digest = _stage_hash("qat", json.dumps(trained_by, sort_keys=True), str(recipe.seed), teacher_digest)
    if not q.enabled:
        return digest, None
    if stage_is_current(paths.qat, digest):
        log.info("qat: unchanged, skipped")
        return digest, json.loads((paths.qat / "result.json").read_text())
    _start_stage(paths.qat, digest)
    started = time.monotonic()
    tf_keras.utils.set_random_seed(recipe.seed + 1)  # dropout draws do not depend on what ran before in this process
    if recipe.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    teacher, codec = load_teacher(paths.root)
    core, _ = load_teacher(paths.root)  # the same FP32 weights under the same names; quantizers added below
    encoded = encode_splits(recipe, paths, codec)
    mixed = MixedPrefixSplit(encoded["train"], _teacher_prefixes(recipe, paths, teacher, encoded["train"],
                                                                  teacher_digest, codec, progress),
                             q.teacher_prefix_fraction, recipe.seed)
    state = attach_quantization(core)
    order = BatchOrder(len(mixed), q.batch_size, recipe.seed + 1)
    calib = (mixed.batch(order.indices(i)) for i in range(q.calibration_batches))
    calibrate(core, state, tqdm(calib, total=q.calibration_batches, desc="qat calibration", unit="batch",
                                disable=not progress, dynamic_ncols=True),
              lambda c, b: teacher_forced_logits(c, b["input_ids"], b["attention_mask"], b["decoder_input_ids"],
                                                 b["decoder_attention_mask"]))
    trainer = Trainer(core, qat_train_config(recipe.train, q), mixed, encoded["validation"], paths.qat,
                      recipe.seed + 1, loss_fn=qat_loss(teacher, q), eval_loss_fn=cross_entropy_loss(0.0),
                      progress=progress)
    result = trainer.run(stop_after=stop_after)
    if result.stop_reason == "interrupted":
        return digest, None
    save_model(core, paths.qat / "model")
    write_json(paths.qat / "ranges.json", range_table(state))

    blobs = export_qat(core)
    tmp = fresh_temp_dir(paths.qat / "export")
    for kind, blob in blobs.items():
        (tmp / f"{kind}.tflite").write_bytes(blob)
    publish_dir(tmp, paths.qat / "export")
    test = load_splits(paths.data)["test"]
    n = len(test) if recipe.eval.max_sentences is None else min(len(test), recipe.eval.max_sentences)
    parity = parity_check(core, blobs, codec, test["source"][:n], q.parity_min_cosine, q.parity_min_identical,
                          progress)
    log.info("qat: %s", parity.message())
    out = {"training": asdict(result), "parity": parity.as_dict(), "quantizers": len(state.slots),
           "seconds": time.monotonic() - started}
    if recipe.ladder.localize:  # the same table as the ladder's full-INT8 variants (and the parity's diagnosis)
        n_loc = min(recipe.ladder.localization_rows, n)
        rows = localize_qat(core, state, blobs, codec, test["source"][:n_loc], test["target"][:n_loc])
        write_json(paths.qat / "localization.json", rows)
        out["localization"] = rows[:LOCALIZATION_TOP]
    write_json(paths.qat / "result.json", out)
    mark_stage(paths.qat, digest, steps=result.steps, parity_passed=parity.passed)
    return digest, out


def stage_evaluate(recipe: Recipe, paths: RunPaths, teacher_digest: str, training: dict | None,
                   progress: bool = True, qat: dict | None = None, qat_digest: str = "") -> dict:
    """Evaluate the ladder variants on the test split; results are cached in `eval/`."""
    digest = _stage_hash("eval", recipe.section_hash("runtime", "eval", "ladder"), teacher_digest, qat_digest)
    cache = paths.root / "eval"
    if stage_is_current(cache, digest):
        log.info("evaluation: unchanged, skipped")
        cached = json.loads((cache / "results.json").read_text())
    else:
        cached = _evaluate_variants(recipe, paths, progress)
        write_json(cache / "results.json", cached)
        mark_stage(cache, digest)
    variants = [VariantResult(**v) for v in cached["variants"]]
    by_name = {v.name: v for v in variants}
    fp32, chosen_name = by_name["fp32"], artifact_variant(recipe)
    chosen = by_name[chosen_name] if chosen_name else fp32
    gates = check_gates(recipe.gates, chosen, fp32)
    if qat is not None:  # measured in the QAT stage, judged with the recipe's current thresholds
        stored = {k: v for k, v in qat["parity"].items() if k != "passed"}
        parity = Parity(**dict(stored, min_cosine_required=recipe.qat.parity_min_cosine,
                               min_identical_required=recipe.qat.parity_min_identical))
        qat = dict(qat, parity=parity.as_dict())
    if qat is not None and chosen.name == "qat-int8":
        message = parity.message()
        if not parity.passed and qat.get("localization"):
            message += "; largest int8 errors: " + ", ".join(
                f"{r['graph']} {r['label']} ({r['op']}, adds {r['added']:.3f})" for r in qat["localization"][:3])
        gates["checks"].append({"name": "qat_parity", "value": parity.mean_cosine,
                                "threshold": parity.min_cosine_required, "passed": parity.passed,
                                "message": message})
        gates["passed"] = all(c["passed"] for c in gates["checks"])
    if chosen_name:
        artifacts = publish_artifacts(recipe, paths, chosen, gates["passed"])
    else:
        artifacts = {"variant": "fp32", "dir": str(paths.teacher_model)}
    report = build_report(recipe.name, variants, artifacts, gates, cached["data"], training, cached["examples"],
                          qat=qat)
    write_report(paths.root, report)
    return report


def publish_artifacts(recipe: Recipe, paths: RunPaths, chosen: VariantResult, gates_passed: bool) -> dict:
    """Copy the chosen variant's graphs to `artifacts/` with tokenizer.json and manifest.json, only when it ran
    and every gate passed; otherwise an earlier `artifacts/` is moved aside so no stale files look current."""
    target = paths.root / "artifacts"
    if chosen.status != "ok" or not gates_passed:
        _set_aside(target)
        why = f"variant {chosen.status}" if chosen.status != "ok" else "gates failed"
        return {"variant": chosen.name, "dir": None, "withheld": why}
    source = paths.root / "ladder" / chosen.name
    encoder, decoder = (source / "encoder.tflite").read_bytes(), (source / "decoder_step.tflite").read_bytes()
    if chosen.name == "qat-int8":
        mode = "qat-int8"
    else:
        rung = RUNGS[chosen.name]
        same = rung.encoder_mode == rung.decoder_mode
        mode = rung.encoder_mode if same else f"{rung.encoder_mode}+{rung.decoder_mode}"
    recipe_hash = hashlib.sha256(dump_resolved(recipe).encode()).hexdigest()
    manifest = build_manifest(encoder, decoder, TextCodec.load(paths.tokenizer), mode, recipe_hash,
                              variant=chosen.name, runtime=to_dict(recipe.runtime))
    write_artifacts(target, encoder, decoder, paths.tokenizer / "tokenizer.json", manifest)
    log.info("artifacts: %s -> %s", chosen.name, target)
    return {"variant": chosen.name, "dir": str(target)}


def _evaluate_variants(recipe: Recipe, paths: RunPaths, progress: bool) -> dict:
    core, codec = load_teacher(paths.root)
    splits = load_splits(paths.data)
    test = splits["test"]
    n = len(test) if recipe.eval.max_sentences is None else min(len(test), recipe.eval.max_sentences)
    sources, references = test["source"][:n], test["target"][:n]
    size = int(sum(v.shape.num_elements() * 4 for v in core.weights))
    keras = KerasBackend(core)
    fp32, hyps, fp32_logits = evaluate_variant("fp32", keras, codec, recipe, sources, references, None, size, progress)
    variants = [fp32] + _ladder(recipe, paths, core, keras, codec, splits, fp32_logits, progress)
    data_stats = {"splits": {}}
    for name in ("train", "validation", "test", "calibration"):
        enc = encode_split(codec, splits[name]["source"], splits[name]["target"], recipe.model.source_length,
                           recipe.model.target_length)
        data_stats["splits"][name] = {"rows": len(enc), "truncated_sources": enc.truncated_sources,
                                      "truncated_targets": enc.truncated_targets}
    examples = [{"source": s, "reference": r, "output": h} for s, r, h in list(zip(sources, references, hyps))[:10]]
    return {"variants": [v.as_dict() for v in variants], "data": data_stats, "examples": examples}


def _ladder(recipe: Recipe, paths: RunPaths, core: Seq2SeqCore, keras: KerasBackend, codec: TextCodec, splits,
            fp32_logits, progress: bool) -> list[VariantResult]:
    """Export and evaluate the TFLite rungs of the ladder, each in its own child process."""
    names = [n for n in recipe.ladder.variants if n != "fp32"]
    if not names:
        return []
    ladder_dir = paths.root / "ladder"
    save_fp32_first_logits(paths.root, fp32_logits)
    calib = splits["calibration"]
    exported = export_rungs(core, keras, codec, recipe, calib["source"], calib["target"],
                            [n for n in names if n in RUNGS], ladder_dir, progress)
    if "qat-int8" in names:
        qat_dir = paths.qat / "export"
        blobs = {k: (qat_dir / f"{k}.tflite").read_bytes() for k in ("encoder", "decoder_step")}
        exported["qat-int8"] = write_variant("qat-int8", blobs, ladder_dir / "qat-int8")
    results = []
    for name in names:
        info = exported[name]
        if "error" in info:
            results.append(VariantResult(name=name, status="failed", error=info["error"]))
            continue
        result = evaluate_in_child(name, paths.root, ladder_dir / name)
        if name == "qat-int8" and (paths.qat / "localization.json").is_file():
            result.extra["localization"] = json.loads((paths.qat / "localization.json").read_text())[:LOCALIZATION_TOP]
        for key in ("float_ops", "quantize_ops", "op_counts", "size_bytes"):
            setattr(result, key, info[key])
        write_json(ladder_dir / name / "metrics.json", result.as_dict())
        log.info("%s: %s", name, f"BLEU {result.bleu:.2f}" if result.status == "ok" else result.error)
        results.append(result)
    return results


def run_pipeline(recipe: Recipe, run_dir: Path, progress: bool = True, stop_after: int | None = None) -> dict | None:
    paths = RunPaths(Path(run_dir))
    paths.root.mkdir(parents=True, exist_ok=True)
    write_text(paths.root / "recipe.resolved.yaml", dump_resolved(recipe))
    data_digest = stage_data(recipe, paths)
    tok_digest = stage_tokenizer(recipe, paths, data_digest)
    teacher_digest, training = stage_teacher(recipe, paths, tok_digest, progress=progress, stop_after=stop_after)
    if training is None:
        return None
    qat_digest, qat = stage_qat(recipe, paths, teacher_digest, progress=progress, stop_after=stop_after)
    if recipe.qat.enabled and qat is None:
        return None
    return stage_evaluate(recipe, paths, teacher_digest, training, progress=progress, qat=qat,
                          qat_digest=qat_digest if recipe.qat.enabled else "")
