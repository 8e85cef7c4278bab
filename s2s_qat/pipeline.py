"""The pipeline: recipe -> data -> tokenizer -> teacher (trained or imported) -> QAT -> student (+ gold-only
baseline) -> student QAT -> evaluation (ladder) -> artifacts + gates -> report.

Each stage writes under `runs/<name>/<stage>/` and a `stage.json` holding the hash of its recipe
sections and of its inputs; a stage whose hash is unchanged is skipped on re-run.
"""
from __future__ import annotations

import dataclasses
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
from s2s_qat.qat.train import MixedPrefixSplit, outputs_as_split, outputs_digest, qat_loss, qat_train_config
from s2s_qat.distill import HiddenProjection, sequence_targets_digest, student_config
from s2s_qat.export.manifest import build_manifest, write_artifacts
from s2s_qat.recipe import Recipe, dump_resolved, to_dict
from s2s_qat.report import build_report, write_report
from s2s_qat.runtime import KerasBackend
from s2s_qat.tokenizer import TextCodec, save_tokenizer, train_tokenizer
from s2s_qat.training import Trainer, cross_entropy_loss, encode_split, make_strategy, save_result
from s2s_qat.training.loop import TrainResult, mean_token_loss
from s2s_qat.training.batches import BatchOrder, EncodedSplit
from s2s_qat.training.decode import teacher_beam, teacher_greedy
from s2s_qat.training.kd import kd_loss
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
    @property
    def sequence_targets(self) -> Path: return self.root / "sequence_targets"
    @property
    def student(self) -> Path: return self.root / "student"
    @property
    def student_gold(self) -> Path: return self.root / "student_gold"
    @property
    def student_qat(self) -> Path: return self.root / "student_qat"


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


def checkpoint_fingerprint(directory: Path) -> str:
    """Name, size and modification time of every file of an imported checkpoint (a changed file re-imports)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"teacher.path {str(directory)!r} is not a directory")
    files = sorted(f for f in directory.rglob("*") if f.is_file())
    return _stage_hash(str(directory.resolve()), *(f"{f.relative_to(directory)}:{f.stat().st_size}:"
                                                   f"{f.stat().st_mtime_ns}" for f in files))


def stage_tokenizer(recipe: Recipe, paths: RunPaths, data_digest: str) -> str:
    if recipe.teacher.source == "hf":  # the checkpoint's own tokenizer, unchanged
        digest = _stage_hash("tokenizer-hf", checkpoint_fingerprint(Path(recipe.teacher.path)))
        if stage_is_current(paths.tokenizer, digest):
            log.info("tokenizer: unchanged, skipped")
            return digest
        from transformers import AutoTokenizer

        from s2s_qat.tokenizer import save_checkpoint_tokenizer

        hf = json.loads((Path(recipe.teacher.path) / "config.json").read_text())
        tok = AutoTokenizer.from_pretrained(recipe.teacher.path)
        save_checkpoint_tokenizer(tok, paths.tokenizer, hf["pad_token_id"], hf["decoder_start_token_id"],
                                  hf["eos_token_id"])
        mark_stage(paths.tokenizer, digest, vocab_size=len(tok), source=str(recipe.teacher.path))
        log.info("tokenizer: %d pieces from %s", len(tok), recipe.teacher.path)
        return digest
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


def _skip_or_start(directory: Path, digest: str, name: str) -> dict | None:
    """A finished stage with this digest: its result.json (skipped). Otherwise the stage is started (or resumed,
    see `_start_stage`) and None is returned."""
    if stage_is_current(directory, digest):
        log.info("%s: unchanged, skipped", name)
        return json.loads((directory / "result.json").read_text())
    _start_stage(directory, digest)
    return None


def _seed(seed: int, deterministic: bool) -> None:
    tf_keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _import_teacher(recipe: Recipe, paths: RunPaths, digest: str) -> tuple[str, dict]:
    """`teacher.source: hf`: the checkpoint's weights in the project's model; its validation loss is measured."""
    from s2s_qat.interop.hf import import_checkpoint

    started = time.monotonic()
    m = recipe.model
    core = import_checkpoint(Path(recipe.teacher.path), m.source_length, m.target_length, m.mask_value,
                             m.layernorm_variance)
    codec = TextCodec.load(paths.tokenizer)
    valid = encode_splits(recipe, paths, codec, names=("validation",))["validation"]
    val_loss = mean_token_loss(tf.function(lambda b: cross_entropy_loss(0.0)(core, b, False)), valid)
    leak = _mask_leak(core, valid)
    save_model(core, paths.teacher_model)
    result = TrainResult(steps=0, best_step=0, best_val_loss=val_loss, stop_reason="imported",
                         seconds=time.monotonic() - started, resumed_from=0)
    save_result(result, paths.teacher / "train_result.json")
    mark_stage(paths.teacher, digest, imported_from=str(recipe.teacher.path), best_val_loss=result.best_val_loss,
               mask_leak={"log_ratio": leak.log_ratio, "leak": leak.leak, "layer": leak.layer,
                          "required_mask_value": leak.required_mask_value()})
    log.info("teacher: imported from %s, validation loss %.4f", recipe.teacher.path, result.best_val_loss)
    return digest, asdict(result)


MASK_LEAK_ROWS = 64


def _mask_leak(core: Seq2SeqCore, valid: EncodedSplit):
    """The bounded mask checked on the first validation rows: an imported checkpoint learned with -inf masks, so
    `model.mask_value` may be too small for its score range (then the deployment graphs are not the checkpoint)."""
    from s2s_qat.validate.mask import DEFAULT_TOLERANCE, mask_leak

    n = min(MASK_LEAK_ROWS, len(valid))
    names = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask")
    batches = [tuple(valid.batch(np.arange(i, min(i + 16, n)))[k] for k in names) for i in range(0, n, 16)]
    leak = mask_leak(core, batches)
    if leak.leak > DEFAULT_TOLERANCE:
        log.warning("teacher: %s", leak.message())
    return leak


# Model settings that change only the int8 deployment graphs, not the float function: the FP32 stages (teacher,
# students) leave them out of their digests and a finished model takes the recipe's value (`deployment_form`);
# the stages that quantize or evaluate graphs (QAT, the ladder) depend on them.
DEPLOYMENT_ONLY = ("model.layernorm_variance",)


def _deployment_settings(recipe: Recipe) -> dict:
    """The recipe's values of DEPLOYMENT_ONLY, by model config field."""
    fields = [key.split(".")[1] for key in DEPLOYMENT_ONLY]
    return {f: getattr(recipe.model, f) for f in fields}


def _deployment_keys(recipe: Recipe) -> list[str]:
    return [f"model.{k}={v}" for k, v in _deployment_settings(recipe).items()]


def deployment_form(model_dir: Path, recipe: Recipe) -> None:
    """Give a saved FP32 model the recipe's deployment-only settings (same weights, same float function): its
    config.json is rewritten when they differ, so every later loader (ladder workers, CLIs) builds those graphs."""
    path = model_dir / "config.json"
    cfg = TransformerConfig.load(path)
    wanted = _deployment_settings(recipe)
    if any(getattr(cfg, k) != v for k, v in wanted.items()):
        log.info("%s: deployment settings %s", model_dir, wanted)
        write_text(path, dataclasses.replace(cfg, **wanted).to_json())


def stage_teacher(recipe: Recipe, paths: RunPaths, tok_digest: str, progress: bool = True,
                  stop_after: int | None = None) -> tuple[str, dict | None]:
    if recipe.teacher.source == "hf":
        m = recipe.model
        digest = _stage_hash("teacher-hf", checkpoint_fingerprint(Path(recipe.teacher.path)), str(m.source_length),
                             str(m.target_length), str(m.mask_value), tok_digest)
    else:
        digest = _stage_hash("teacher", recipe.section_hash("model", "teacher", "train", leave_out=DEPLOYMENT_ONLY),
                             tok_digest)
    if stage_is_current(paths.teacher, digest):
        log.info("teacher: unchanged, skipped")
        deployment_form(paths.teacher_model, recipe)
        return digest, json.loads((paths.teacher / "train_result.json").read_text())
    _start_stage(paths.teacher, digest)
    if recipe.teacher.source == "hf":
        return _import_teacher(recipe, paths, digest)

    codec = TextCodec.load(paths.tokenizer)
    cfg = TransformerConfig.from_recipe(recipe.model, codec.vocab_size)
    encoded = encode_splits(recipe, paths, codec)
    strategy = make_strategy(recipe.train.strategy)
    _seed(recipe.seed, recipe.train.deterministic)
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


def load_model(directory: Path) -> Seq2SeqCore:
    """An FP32 model published by `save_model` (teacher/model, student/model, student_gold/model)."""
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory} holds no trained model (config.json missing); "
                                f"run `python -m s2s_qat.train RECIPE` first")
    core = build_core(TransformerConfig.load(directory / "config.json"))
    tf.train.Checkpoint(core=core).read(str(directory / "weights")).assert_existing_objects_matched()
    return core


def load_teacher(run_dir: Path) -> tuple[Seq2SeqCore, TextCodec]:
    paths = RunPaths(Path(run_dir))
    return load_model(paths.teacher_model), TextCodec.load(paths.tokenizer)


def _cached_outputs(cache: Path, digest: str, decode) -> tuple[np.ndarray, float, bool]:
    """Outputs decoded once into `cache` (an .npz keyed by `digest`) and reused while the digest is unchanged.
    Returns (outputs, decoding seconds, reused)."""
    if cache.is_file():
        with np.load(cache) as data:
            if str(data["digest"]) == digest:
                seconds = float(data["seconds"]) if "seconds" in data.files else 0.0
                return data["outputs"], seconds, True
    started = time.monotonic()
    outputs = decode()
    seconds = time.monotonic() - started
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_with(cache, lambda tmp: np.savez(tmp, outputs=outputs, digest=np.array(digest), seconds=np.array(seconds)))
    return outputs, seconds, False


def _teacher_prefixes(recipe: Recipe, out_dir: Path, teacher: Seq2SeqCore, train, teacher_digest: str,
                      codec: TextCodec, progress: bool):
    """The FP32 model's greedy outputs for the first `qat.teacher_prefix_rows` training sources, decoded once and
    cached in <qat dir>/teacher_outputs.npz (reused while the model and the row count are unchanged)."""
    rows = min(recipe.qat.teacher_prefix_rows, len(train))
    cache = out_dir / "teacher_outputs.npz"
    outputs, _, reused = _cached_outputs(cache, outputs_digest(teacher_digest, rows), lambda: teacher_greedy(
        teacher, train.input_ids[:rows], train.attention_mask[:rows], progress))
    if reused:
        log.info("qat: %d teacher outputs reused from %s", rows, cache)
    return outputs_as_split(train.input_ids[:rows], train.attention_mask[:rows], outputs, codec.bos_id, codec.pad_id)


def stage_qat(recipe: Recipe, paths: RunPaths, teacher_digest: str, progress: bool = True,
              stop_after: int | None = None) -> tuple[str, dict | None]:
    """QAT of the teacher (`qat.enabled`) -> qat/."""
    return _qat_of(recipe, paths, "qat", teacher_digest, paths.teacher_model, paths.qat, recipe.qat.enabled,
                   progress, stop_after)


def stage_student_qat(recipe: Recipe, paths: RunPaths, student_digest: str, progress: bool = True,
                      stop_after: int | None = None) -> tuple[str, dict | None]:
    """QAT of the FP32 student (`student-qat-int8` in the ladder), with the `qat:` settings -> student_qat/."""
    return _qat_of(recipe, paths, "student-qat", student_digest, paths.student / "model", paths.student_qat,
                   "student-qat-int8" in recipe.ladder.variants, progress, stop_after)


def _qat_of(recipe: Recipe, paths: RunPaths, name: str, source_digest: str, source: Path, out: Path, enabled: bool,
            progress: bool, stop_after: int | None) -> tuple[str, dict | None]:
    """QAT of the deployment graphs from an FP32 model's weights, distilling from that FP32 model -> <out>/model
    (weights + ranges), <out>/export/*.tflite (full-INT8, no representative dataset) and <out>/result.json
    (training, parity, inventory)."""
    q = recipe.qat
    # Parity thresholds are judged at evaluation time: changing them must not retrain.
    trained_by = {k: v for k, v in to_dict(q).items() if not k.startswith("parity_") and k != "enabled"}
    digest = _stage_hash(name, json.dumps(trained_by, sort_keys=True), str(recipe.seed), source_digest,
                         *_deployment_keys(recipe))
    if not enabled:
        return digest, None
    done = _skip_or_start(out, digest, name)
    if done is not None:
        return digest, done
    started = time.monotonic()
    phases: list[tuple[str, float]] = []  # (part of this stage, seconds), in order

    def lap(phase: str) -> None:
        phases.append((phase, time.monotonic() - started - sum(v for _, v in phases)))

    _seed(recipe.seed + 1, recipe.train.deterministic)  # dropout draws do not depend on what ran before
    codec = TextCodec.load(paths.tokenizer)
    teacher = load_model(source)
    core = load_model(source)  # the same FP32 weights under the same names; quantizers added below
    encoded = encode_splits(recipe, paths, codec)
    lap("load")
    mixed = MixedPrefixSplit(encoded["train"], _teacher_prefixes(recipe, out, teacher, encoded["train"],
                                                                  source_digest, codec, progress),
                             q.teacher_prefix_fraction, recipe.seed)
    lap("teacher_prefixes")
    state = attach_quantization(core)
    order = BatchOrder(len(mixed), q.batch_size, recipe.seed + 1)
    calib = (mixed.batch(order.indices(i)) for i in range(q.calibration_batches))
    calibrate(core, state, tqdm(calib, total=q.calibration_batches, desc=f"{name} calibration", unit="batch",
                                disable=not progress, dynamic_ncols=True),
              lambda c, b: teacher_forced_logits(c, b["input_ids"], b["attention_mask"], b["decoder_input_ids"],
                                                 b["decoder_attention_mask"]))
    lap("calibration")
    trainer = Trainer(core, qat_train_config(recipe.train, q), mixed, encoded["validation"], out,
                      recipe.seed + 1, loss_fn=qat_loss(teacher, q), eval_loss_fn=cross_entropy_loss(0.0),
                      progress=progress)
    result = trainer.run(stop_after=stop_after)
    if result.stop_reason == "interrupted":
        return digest, None
    save_model(core, out / "model")
    write_json(out / "ranges.json", range_table(state))
    lap("training")

    blobs = export_qat(core)
    tmp = fresh_temp_dir(out / "export")
    for kind, blob in blobs.items():
        (tmp / f"{kind}.tflite").write_bytes(blob)
    publish_dir(tmp, out / "export")
    lap("export")
    test = load_splits(paths.data)["test"]
    n = len(test) if recipe.eval.max_sentences is None else min(len(test), recipe.eval.max_sentences)
    parity = parity_check(core, blobs, codec, test["source"][:n], q.parity_min_cosine, q.parity_min_identical,
                          progress)
    log.info("%s: %s", name, parity.message())
    lap("parity")
    result_json = {"training": asdict(result), "parity": parity.as_dict(), "quantizers": len(state.slots)}
    if recipe.ladder.localize:  # the same table as the ladder's full-INT8 variants (and the parity's diagnosis)
        n_loc = min(recipe.ladder.localization_rows, n)
        rows = localize_qat(core, state, blobs, codec, test["source"][:n_loc], test["target"][:n_loc])
        write_json(out / "localization.json", rows)
        result_json["localization"] = rows[:LOCALIZATION_TOP]
        lap("localization")
    # `seconds`: the whole stage; `producing_seconds`: what it takes to make the artifacts (everything before the
    # parity check and the localization, which validate them as the ladder validates every variant).
    result_json |= {"seconds": time.monotonic() - started, "phase_seconds": phases,
                    "producing_seconds": sum(v for k, v in phases if k not in ("parity", "localization"))}
    write_json(out / "result.json", result_json)
    mark_stage(out, digest, steps=result.steps, parity_passed=parity.passed)
    return digest, result_json


def _sequence_targets(recipe: Recipe, paths: RunPaths, teacher: Seq2SeqCore, train, teacher_digest: str,
                      codec: TextCodec, progress: bool) -> tuple[EncodedSplit, dict]:
    """Sequence-level KD targets: the teacher's beam-search outputs for the first `distill.sequence_rows` training
    sources, decoded once into sequence_targets/targets.npz and reused while the teacher and the decoding settings
    are unchanged (a new student architecture or loss does not decode again)."""
    d, rt = recipe.distill, recipe.runtime
    rows = min(d.sequence_rows, len(train))
    cache = paths.sequence_targets / "targets.npz"
    digest = sequence_targets_digest(teacher_digest, rows, d.beam_size, rt.length_penalty, rt.max_new_tokens,
                                     rt.no_repeat_ngram_size)
    outputs, seconds, reused = _cached_outputs(cache, digest, lambda: teacher_beam(
        teacher, train.input_ids[:rows], train.attention_mask[:rows], d.beam_size, rt.length_penalty,
        rt.max_new_tokens, rt.no_repeat_ngram_size, progress))
    if reused:
        log.info("student: %d sequence-level targets reused from %s", rows, cache)
    else:
        log.info("student: %d sequence-level targets decoded (beam %d) in %.0f s", rows, d.beam_size, seconds)
    info = {"rows": rows, "beam_size": d.beam_size, "decoded": not reused, "decode_seconds": seconds}
    return outputs_as_split(train.input_ids[:rows], train.attention_mask[:rows], outputs, codec.bos_id,
                            codec.pad_id), info


def stage_student(recipe: Recipe, paths: RunPaths, teacher_digest: str, progress: bool = True,
                  stop_after: int | None = None, gold_only: bool = False) -> tuple[str, dict | None]:
    """The FP32 student -> student/ (distilled) or, with `gold_only`, the same architecture trained on the gold
    targets with cross-entropy only -> student_gold/ (the baseline that measures what distillation adds)."""
    d = recipe.distill
    name, out = ("student-gold", paths.student_gold) if gold_only else ("student", paths.student)
    enabled = d.enabled and (not gold_only or "student-gold-fp32" in recipe.ladder.variants)
    sections = {"student": to_dict(d.student), "train": to_dict(d.train)}
    if not gold_only:
        sections.update({k: v for k, v in to_dict(d).items() if k not in ("enabled", "student", "train")},
                        decoding=to_dict(recipe.runtime))
    digest = _stage_hash(name, json.dumps(sections, sort_keys=True), str(recipe.seed), teacher_digest)
    if not enabled:
        return digest, None
    done = _skip_or_start(out, digest, name)
    if done is not None:
        deployment_form(out / "model", recipe)
        return digest, done
    started = time.monotonic()
    codec = TextCodec.load(paths.tokenizer)
    teacher = load_model(paths.teacher_model)
    encoded = encode_splits(recipe, paths, codec)
    _seed(recipe.seed + 2, d.train.deterministic)  # both students start from the same initial weights
    strategy = make_strategy(d.train.strategy)
    with strategy.scope():
        core = build_core(student_config(teacher.cfg, d.student))
        extra = None if gold_only else HiddenProjection(core.cfg.d_model, teacher.cfg.d_model)
    info: dict = {"parameters": core.count_params(), "teacher_parameters": teacher.count_params()}
    if gold_only:
        train, loss = encoded["train"], cross_entropy_loss(d.train.label_smoothing)
    else:
        targets, info["sequence_targets"] = _sequence_targets(recipe, paths, teacher, encoded["train"],
                                                              teacher_digest, codec, progress)
        train = MixedPrefixSplit(encoded["train"], targets, d.sequence_fraction, recipe.seed + 2)
        loss = kd_loss(teacher, word_weight=d.word_weight, temperature=d.temperature,
                       label_smoothing=d.train.label_smoothing, encoder_mse_weight=d.hidden_weight, projection=extra)
    trainer = Trainer(core, d.train, train, encoded["validation"], out, recipe.seed + 2, loss_fn=loss,
                      eval_loss_fn=cross_entropy_loss(0.0), strategy=strategy, progress=progress, extra=extra)
    result = trainer.run(stop_after=stop_after)
    if result.stop_reason == "interrupted":
        return digest, None
    save_model(core, out / "model")
    out_json = {"training": asdict(result), **info, "seconds": time.monotonic() - started}
    write_json(out / "result.json", out_json)
    mark_stage(out, digest, steps=result.steps, best_val_loss=result.best_val_loss)
    log.info("%s: %d parameters (teacher %d), %d steps, best validation loss %.4f", name, info["parameters"],
             info["teacher_parameters"], result.steps, result.best_val_loss)
    return digest, out_json


QAT_VARIANTS = {"qat-int8": "qat", "student-qat-int8": "student_qat"}  # ladder variant -> its QAT stage directory


def stage_evaluate(recipe: Recipe, paths: RunPaths, teacher_digest: str, training: dict | None,
                   progress: bool = True, qat: dict[str, dict | None] | None = None, qat_digest: str = "",
                   students: dict[str, dict | None] | None = None) -> dict:
    """Evaluate the ladder variants on the test split; results are cached in `eval/`.

    `qat`: QAT stage results by ladder variant (`qat-int8`, `student-qat-int8`); `students`: the student stages'
    results (`student`, `student_gold`) for the report; `qat_digest`: the digests of every stage after the teacher
    that the ladder reads (QAT, students, student QAT), joined."""
    digest = _stage_hash("eval", recipe.section_hash("runtime", "eval", "ladder"), teacher_digest, qat_digest,
                         *_deployment_keys(recipe))
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
    judged = {}
    for variant, result in (qat or {}).items():
        if result is None:
            continue
        # measured in the QAT stage, judged with the recipe's current thresholds
        stored = {k: v for k, v in result["parity"].items() if k != "passed"}
        parity = Parity(**dict(stored, min_cosine_required=recipe.qat.parity_min_cosine,
                               min_identical_required=recipe.qat.parity_min_identical))
        judged[variant] = dict(result, parity=parity.as_dict())
        if variant != chosen.name:
            continue
        message = parity.message()
        if not parity.passed and result.get("localization"):
            message += "; largest int8 errors: " + ", ".join(
                f"{r['graph']} {r['label']} ({r['op']}, adds {r['added']:.3f})" for r in result["localization"][:3])
        gates["checks"].append({"name": "qat_parity", "value": parity.mean_cosine,
                                "threshold": parity.min_cosine_required, "passed": parity.passed,
                                "message": message})
        gates["passed"] = all(c["passed"] for c in gates["checks"])
    if chosen_name:
        artifacts = publish_artifacts(recipe, paths, chosen, gates["passed"])
    else:
        artifacts = {"variant": "fp32", "dir": str(paths.teacher_model)}
    student = None
    if students and students.get("student") is not None:
        student = dict(students, qat=judged.get("student-qat-int8"))
    report = build_report(recipe.name, variants, artifacts, gates, cached["data"], training, cached["examples"],
                          qat=judged.get("qat-int8"), student=student)
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
    if chosen.name in QAT_VARIANTS:
        mode = "qat-int8"
    else:
        rung = RUNGS[chosen.name]
        same = rung.encoder_mode == rung.decoder_mode
        mode = rung.encoder_mode if same else f"{rung.encoder_mode}+{rung.decoder_mode}"
    recipe_hash = hashlib.sha256(dump_resolved(recipe).encode()).hexdigest()
    manifest = build_manifest(encoder, decoder, TextCodec.load(paths.tokenizer), mode, recipe_hash,
                              variant=chosen.name, runtime=to_dict(recipe.runtime))
    from s2s_qat.tokenizer import CODEC_FILE

    tokenizer = paths.tokenizer if (paths.tokenizer / CODEC_FILE).is_file() else paths.tokenizer / "tokenizer.json"
    write_artifacts(target, encoder, decoder, tokenizer, manifest)
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
    variants = [fp32]
    for name, directory in (("student-fp32", paths.student), ("student-gold-fp32", paths.student_gold)):
        if name in recipe.ladder.variants:
            student = load_model(directory / "model")
            size = int(sum(v.shape.num_elements() * 4 for v in student.weights))
            variants.append(evaluate_variant(name, KerasBackend(student), codec, recipe, sources, references,
                                             fp32_logits, size, progress)[0])
    variants += _ladder(recipe, paths, core, keras, codec, splits, fp32_logits, progress)
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
    names = [n for n in recipe.ladder.variants if n not in ("fp32", "student-fp32", "student-gold-fp32")]
    if not names:
        return []
    ladder_dir = paths.root / "ladder"
    save_fp32_first_logits(paths.root, fp32_logits)
    calib = splits["calibration"]
    exported = export_rungs(core, keras, codec, recipe, calib["source"], calib["target"],
                            [n for n in names if n in RUNGS], ladder_dir, progress)
    for name in (n for n in names if n in QAT_VARIANTS):
        qat_dir = paths.root / QAT_VARIANTS[name] / "export"
        blobs = {k: (qat_dir / f"{k}.tflite").read_bytes() for k in ("encoder", "decoder_step")}
        exported[name] = write_variant(name, blobs, ladder_dir / name)
    results = []
    for name in names:
        info = exported[name]
        if "error" in info:
            results.append(VariantResult(name=name, status="failed", error=info["error"]))
            continue
        result = evaluate_in_child(name, paths.root, ladder_dir / name)
        localization = paths.root / QAT_VARIANTS.get(name, "-") / "localization.json"
        if name in QAT_VARIANTS and localization.is_file():
            result.extra["localization"] = json.loads(localization.read_text())[:LOCALIZATION_TOP]
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
    student_digest, student = stage_student(recipe, paths, teacher_digest, progress=progress, stop_after=stop_after)
    if recipe.distill.enabled and student is None:
        return None
    gold_digest, gold = stage_student(recipe, paths, teacher_digest, progress=progress, stop_after=stop_after,
                                      gold_only=True)
    if "student-gold-fp32" in recipe.ladder.variants and gold is None:
        return None
    student_qat_digest, student_qat = stage_student_qat(recipe, paths, student_digest, progress=progress,
                                                        stop_after=stop_after)
    if "student-qat-int8" in recipe.ladder.variants and student_qat is None:
        return None
    variants = set(recipe.ladder.variants)
    upstream = "|".join(d for d, on in ((qat_digest, recipe.qat.enabled), (student_digest, recipe.distill.enabled),
                                       (gold_digest, "student-gold-fp32" in variants),
                                       (student_qat_digest, "student-qat-int8" in variants)) if on)
    return stage_evaluate(recipe, paths, teacher_digest, training, progress=progress,
                          qat={"qat-int8": qat, "student-qat-int8": student_qat}, qat_digest=upstream,
                          students={"student": student, "student_gold": gold})
