"""Typed, frozen recipe schema; YAML is parsed once (safe_load) and validated before any work.

Every section is a frozen dataclass. Field constraints live in the field's metadata
(`choices`, `min`, `max`, `min_exclusive`), so the schema is the single source of truth for
validation and for `recipes/README.md`. Errors name the key path, the value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

RECIPE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class RecipeError(ValueError):
    """A recipe that cannot run. `problems` lists (key path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"{path}: {msg}" if path else msg for path, msg in problems]
        super().__init__("invalid recipe:\n  " + "\n  ".join(lines))


def _f(default: Any = dataclasses.MISSING, *, doc: str, factory: Any = None, **rules: Any) -> Any:
    meta = {"doc": doc, **rules}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# === Sections ===

TN_EN_CLASSES = ("cardinal", "ordinal", "decimal", "money", "date", "time", "percent", "measure", "year", "digits")


@dataclass(frozen=True)
class SplitSizes:
    validation: int = _f(300, doc="sentences held out for validation (early stopping)", min=1)
    test: int = _f(300, doc="sentences held out for the test split (BLEU, report)", min=1)
    calibration: int = _f(200, doc="sentences held out for quantization calibration", min=1)


@dataclass(frozen=True)
class HubSource:
    name: str | None = _f(None, doc="Hugging Face dataset id, e.g. `wmt16` (real loading code; needs the hub or a local cache)")
    config: str | None = _f(None, doc="dataset configuration name, e.g. `de-en`")
    split: str = _f("train", doc="split to load; validation/test/calibration are carved from it unless `splits_from_hub` is true")
    splits_from_hub: bool = _f(False, doc="take `validation` and `test` splits from the hub dataset instead of carving them")
    revision: str | None = _f(None, doc="dataset revision (git tag or commit) for reproducibility")


@dataclass(frozen=True)
class FileSource:
    train: str | None = _f(None, doc="path to the training file (json, jsonl, csv, tsv or parquet)")
    validation: str | None = _f(None, doc="optional validation file; carved from `train` when absent")
    test: str | None = _f(None, doc="optional test file; carved from `train` when absent")


@dataclass(frozen=True)
class TnEnCorpus:
    num_examples: int = _f(12000, doc="total sentences generated (all splits together)", min=100)
    min_entities: int = _f(1, doc="fewest non-standard words (numbers, money, dates...) per sentence", min=1, max=8)
    max_entities: int = _f(1, doc="most non-standard words per sentence", min=1, max=8)
    classes: dict[str, float] = _f(
        doc="relative weight of each semiotic class; classes left out get weight 0",
        factory=lambda: {c: 1.0 for c in TN_EN_CLASSES},
        keys=TN_EN_CLASSES,
        min=0.0,
    )
    carrier_words: tuple[int, int] = _f((2, 8), doc="[min, max] ordinary words around the entities", min=0, max=40)
    carrier_vocabulary: Literal["basic", "rich"] = _f(
        "basic", doc="`basic`: ~250 common words; `rich`: adds ~1,500 CLDR display names (territories, languages...)")


@dataclass(frozen=True)
class DataConfig:
    source: Literal["builtin", "hub", "files"] = _f("builtin", doc="where the parallel text comes from")
    corpus: Literal["tn-en"] = _f("tn-en", doc="built-in corpus (used when `source: builtin`)")
    tn_en: TnEnCorpus = _f(doc="settings of the built-in `tn-en` corpus", factory=TnEnCorpus)
    hub: HubSource = _f(doc="settings for `source: hub`", factory=HubSource)
    files: FileSource = _f(doc="settings for `source: files`", factory=FileSource)
    source_column: str = _f("source", doc="column holding the input text; `a.b` reads key `b` of a dict column `a`")
    target_column: str = _f("target", doc="column holding the output text; `a.b` reads key `b` of a dict column `a`")
    splits: SplitSizes = _f(doc="sizes of the held-out splits", factory=SplitSizes)


@dataclass(frozen=True)
class TokenizerConfig:
    type: Literal["bpe", "unigram"] = _f("bpe", doc="subword model trained with Hugging Face `tokenizers` (BPE training is deterministic; Unigram training is not)")
    vocab_size: int = _f(1000, doc="target vocabulary size including the 4 special tokens", min=16, max=262144)
    shared: Literal[True] = _f(True, doc="one vocabulary for source and target (separate vocabularies are not supported yet)")
    split_digits: bool = _f(True, doc="split every digit into its own piece (helps number reading)")
    lowercase: bool = _f(False, doc="lowercase text before tokenizing")
    min_frequency: int = _f(2, doc="BPE: minimum pair frequency for a merge", min=1)


@dataclass(frozen=True)
class ModelConfig:
    d_model: int = _f(128, doc="hidden width", min=8)
    encoder_layers: int = _f(2, doc="encoder blocks", min=1)
    decoder_layers: int = _f(2, doc="decoder blocks", min=1)
    attention_heads: int = _f(4, doc="heads per attention; must divide `d_model`", min=1)
    ffn_dim: int = _f(256, doc="feed-forward inner width", min=8)
    activation: Literal["relu", "gelu", "gelu_new", "swish"] = _f("relu", doc="feed-forward activation")
    normalize_before: bool = _f(False, doc="pre-LayerNorm blocks (false: post-LN as in Marian/BART)")
    scale_embedding: bool = _f(True, doc="multiply token embeddings by sqrt(d_model)")
    position_embedding: Literal["sinusoidal", "learned"] = _f("sinusoidal", doc="Marian: sinusoidal; BART: learned")
    layernorm_embedding: bool = _f(False, doc="LayerNorm after the embedding sum (BART)")
    tie_word_embeddings: bool = _f(True, doc="output projection shares the token embedding matrix")
    final_logits_bias: bool = _f(True, doc="add a learned bias to the logits")
    layer_norm_eps: float = _f(1e-5, doc="LayerNorm epsilon", min_exclusive=0.0, max=0.1)
    dropout: float = _f(0.1, doc="residual dropout during training", min=0.0, max=0.9)
    attention_dropout: float = _f(0.0, doc="dropout on attention probabilities during training", min=0.0, max=0.9)
    mask_value: float = _f(20.0, doc="bounded mask: masked scores land on -mask_value (deployment graphs)", min=1.0, max=1000.0)
    layernorm_variance: Literal["mul", "matmul"] = _f("mul", doc="how the deployment LayerNorm forms its variance (the same float function, so a trained teacher is reused): `mul` = MEAN of MUL(xc, xc), every square an int8 tensor; `matmul` = one BATCH_MATMUL of xc with itself, the sum of squares accumulated exactly in int32 and rounded once")
    source_length: int = _f(32, doc="S: fixed source length of the deployment graphs (tokens incl. EOS)", min=2, max=4096)
    target_length: int = _f(48, doc="T: fixed decoder length (BOS + generated tokens)", min=2, max=4096)


@dataclass(frozen=True)
class TeacherConfig:
    source: Literal["train", "hf"] = _f("train", doc="`train`: train the FP32 teacher from the recipe's data; `hf`: import a Hugging Face MarianMTModel or BartForConditionalGeneration checkpoint (architecture and tokenizer from the checkpoint; `model:` supplies only source_length, target_length and mask_value)")
    path: str | None = _f(None, doc="checkpoint directory (config.json, model.safetensors or pytorch_model.bin, tokenizer files) when source is `hf`")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = _f(64, doc="sentences per step", min=1)
    max_steps: int = _f(3000, doc="upper bound on optimizer steps", min=1)
    learning_rate: float = _f(1e-3, doc="peak learning rate", min_exclusive=0.0, max=1.0)
    schedule: Literal["inverse_sqrt", "cosine", "constant"] = _f("inverse_sqrt", doc="learning-rate schedule after warm-up")
    warmup_steps: int = _f(300, doc="linear warm-up steps", min=0)
    label_smoothing: float = _f(0.1, doc="label smoothing of the cross-entropy", min=0.0, max=0.5)
    weight_decay: float = _f(0.0, doc="decoupled weight decay (AdamW)", min=0.0, max=1.0)
    clip_norm: float = _f(1.0, doc="global gradient-norm clipping (0: off)", min=0.0)
    eval_every: int = _f(250, doc="steps between validation-loss evaluations", min=1)
    checkpoint_every: int = _f(250, doc="steps between checkpoints", min=1)
    keep_checkpoints: int = _f(2, doc="checkpoints kept on disk", min=1)
    early_stopping_patience: int = _f(6, doc="evaluations without improvement before stopping (0: never stop early)", min=0)
    log_every: int = _f(50, doc="steps between TensorBoard scalars", min=1)
    max_minutes: float | None = _f(None, doc="wall-clock budget for this training; stops at the next evaluation after it", min_exclusive=0.0)
    strategy: Literal["none", "mirrored", "multi_worker"] = _f("none", doc="tf.distribute strategy")
    deterministic: bool = _f(True, doc="TensorFlow op determinism: same recipe and seed, same weights (about 10% slower)")


@dataclass(frozen=True)
class RuntimeConfig:
    decoding: Literal["greedy", "beam"] = _f("greedy", doc="host generation loop used for evaluation")
    beam_size: int = _f(4, doc="beams for `decoding: beam`", min=1, max=64)
    length_penalty: float = _f(1.0, doc="beam score = logprob / length**length_penalty", min=0.0, max=5.0)
    max_new_tokens: int | None = _f(None, doc="most tokens generated, EOS included (default and upper bound: model.target_length)", min=1)
    no_repeat_ngram_size: int = _f(0, doc="forbid repeating any n-gram of this size (0: off)", min=0)


@dataclass(frozen=True)
class EvalConfig:
    max_sentences: int | None = _f(None, doc="evaluate on at most this many test sentences (default: all)", min=1)
    sensitivity_sources: int = _f(32, doc="sources whose first-step logits are compared pairwise (source sensitivity)", min=2)


LADDER_VARIANTS = ("fp32", "float-tflite", "dynamic-range", "ptq-int8-naive", "ptq-int8", "int16x8",
                   "int8-enc+fp32-dec", "fp32-enc+int8-dec", "qat-int8", "student-fp32", "student-gold-fp32",
                   "student-qat-int8")
STUDENT_VARIANTS = ("student-fp32", "student-gold-fp32", "student-qat-int8")


@dataclass(frozen=True)
class LadderConfig:
    variants: tuple[str, ...] = _f(("fp32",), doc="variants evaluated and reported (fp32 always runs first)",
                                   choices=LADDER_VARIANTS)
    calibration_sources: int = _f(200, doc="N: calibration sources for PTQ (taken from the calibration split)", min=1)
    calibration_prefixes: int = _f(5, doc="K: decoder prefixes per source for generation-state calibration", min=1, max=16)
    localize: bool = _f(True, doc="per-tensor int8-vs-float error of full-INT8 variants, worst ten in report.md")
    localization_rows: int = _f(32, doc="calibration rows per graph on which the per-tensor errors are measured (each row runs both graphs)", min=1, max=1024)


@dataclass(frozen=True)
class QatConfig:
    """Quantization-aware training of the deployment graphs, starting from the FP32 teacher's weights."""
    enabled: bool = _f(False, doc="run QAT and export the `qat-int8` ladder variant (needs `qat-int8` in ladder.variants)")
    max_steps: int = _f(400, doc="QAT optimizer steps", min=1)
    batch_size: int = _f(64, doc="sentences per step", min=1)
    learning_rate: float = _f(2e-4, doc="peak learning rate (fine-tuning: well below the teacher's)", min_exclusive=0.0, max=1.0)
    warmup_steps: int = _f(50, doc="linear warm-up steps", min=0)
    schedule: Literal["inverse_sqrt", "cosine", "constant"] = _f("cosine", doc="learning-rate schedule after warm-up")
    label_smoothing: float = _f(0.0, doc="label smoothing of the cross-entropy term", min=0.0, max=0.5)
    calibration_batches: int = _f(16, doc="training batches whose float min/max set the initial activation ranges", min=1)
    distill_weight: float = _f(0.5, doc="weight of the logits KL to the FP32 teacher; the cross-entropy gets 1 - this", min=0.0, max=1.0)
    temperature: float = _f(2.0, doc="softmax temperature of the logits KL (the term is scaled by T^2)", min_exclusive=0.0, max=20.0)
    encoder_mse_weight: float = _f(0.0, doc="weight of the MSE between the QAT and FP32 encoder outputs", min=0.0)
    cross_attention_mse_weight: float = _f(0.0, doc="weight of the MSE between QAT and FP32 cross-attention outputs (every decoder layer)", min=0.0)
    teacher_prefix_fraction: float = _f(0.5, doc="share of training rows whose decoder input and labels are the teacher's own greedy output instead of the gold target", min=0.0, max=1.0)
    teacher_prefix_rows: int = _f(4096, doc="training sources the teacher decodes once (cached in `qat/`) to supply those rows", min=1)
    eval_every: int = _f(100, doc="steps between validation-loss evaluations (of the fake-quantized model) and checkpoints", min=1)
    early_stopping_patience: int = _f(0, doc="evaluations without improvement before stopping (0: never stop early)", min=0)
    max_minutes: float | None = _f(None, doc="wall-clock budget for QAT training; stops after the next evaluation", min_exclusive=0.0)
    parity_min_cosine: float = _f(0.999, doc="lowest mean first-step logits cosine between the QAT Keras model and its TFLite export", min=-1.0, max=1.0)
    parity_min_identical: float = _f(0.99, doc="lowest share of test sentences with identical greedy outputs (QAT Keras vs TFLite)", min=0.0, max=1.0)


@dataclass(frozen=True)
class StudentModel:
    """The student's architecture. Vocabulary, tokenizer, lengths, mask value, LayerNorm epsilon and the logits
    bias are the teacher's (`model:`), so the student runs on the same data and deployment graphs."""
    d_model: int = _f(128, doc="hidden width", min=8)
    encoder_layers: int = _f(2, doc="encoder blocks", min=1)
    decoder_layers: int = _f(1, doc="decoder blocks", min=1)
    attention_heads: int = _f(4, doc="heads per attention; must divide `d_model`", min=1)
    ffn_dim: int = _f(256, doc="feed-forward inner width", min=8)
    activation: Literal["relu", "gelu", "gelu_new", "swish"] = _f("relu", doc="feed-forward activation (ReLU: bounded below, fuses into FULLY_CONNECTED)")
    normalize_before: bool = _f(False, doc="pre-LayerNorm blocks (false: post-LN)")
    scale_embedding: bool = _f(True, doc="multiply token embeddings by sqrt(d_model)")
    position_embedding: Literal["sinusoidal", "learned"] = _f("sinusoidal", doc="sinusoidal or learned positions")
    layernorm_embedding: bool = _f(False, doc="LayerNorm after the embedding sum")
    tie_word_embeddings: bool = _f(True, doc="output projection shares the token embedding matrix")
    dropout: float = _f(0.1, doc="residual dropout during training", min=0.0, max=0.9)


@dataclass(frozen=True)
class DistillConfig:
    """A smaller, quantization-friendly student trained from the FP32 teacher (word- and sequence-level
    distillation), evaluated as `student-fp32`, quantized by QAT (the `qat:` settings) as `student-qat-int8`."""
    enabled: bool = _f(False, doc="train the student (needs `student-fp32` in ladder.variants)")
    student: StudentModel = _f(doc="the student's architecture", factory=StudentModel)
    train: TrainConfig = _f(doc="the student's training (also used for the gold-only baseline, `student-gold-fp32`)", factory=TrainConfig)
    word_weight: float = _f(0.5, doc="word-level KD: weight of the KL to the teacher's logits; the cross-entropy gets 1 - this", min=0.0, max=1.0)
    temperature: float = _f(2.0, doc="softmax temperature of the word-level KL (the term is scaled by T^2)", min_exclusive=0.0, max=20.0)
    sequence_fraction: float = _f(0.5, doc="sequence-level KD: share of training rows whose target is the teacher's beam-search output instead of the gold target", min=0.0, max=1.0)
    sequence_rows: int = _f(4096, doc="training sources the teacher decodes with beam search once (cached in `student/`)", min=1)
    beam_size: int = _f(4, doc="beams of the teacher's sequence-level targets (length penalty: runtime.length_penalty)", min=1, max=16)
    hidden_weight: float = _f(0.0, doc="weight of the MSE between the student's encoder output, through a learned projection when widths differ, and the teacher's", min=0.0)


# `export.variant: auto` takes the first of these that the ladder ran (student variants will join them).
AUTO_ARTIFACT_ORDER = ("qat-int8", "student-qat-int8", "ptq-int8")


@dataclass(frozen=True)
class ExportConfig:
    variant: str = _f("auto", doc="ladder variant whose graphs become `artifacts/` (encoder.tflite, decoder_step.tflite, "
                                  "tokenizer.json, manifest.json) and are gated; `auto`: the first of "
                                  + ", ".join(AUTO_ARTIFACT_ORDER) + " in ladder.variants (none: gates apply to fp32)",
                      choices=("auto",) + LADDER_VARIANTS[1:])


@dataclass(frozen=True)
class GatesConfig:
    """Gates on the run's chosen artifacts (fp32 when the ladder exports none); a failed gate exits 1."""
    min_bleu: float | None = _f(None, doc="lowest test BLEU of the chosen variant", min=0.0, max=100.0)
    max_bleu_drop: float | None = _f(None, doc="largest BLEU drop from fp32 to the chosen variant", min=0.0)
    min_cosine_to_fp32: float | None = _f(None, doc="lowest mean first-step logits cosine to FP32 (same source)", min=-1.0, max=1.0)
    max_pair_cosine_delta: float | None = _f(None, doc="largest rise of the pair cosine over FP32's (a source-blind decoder rises toward 1)", min=0.0)
    max_float_ops: int | None = _f(None, doc="most float ops on the compute path (0: full integer)", min=0)
    max_quantize_ops: int | None = _f(None, doc="most QUANTIZE/DEQUANTIZE ops", min=0)


@dataclass(frozen=True)
class Recipe:
    name: str = _f(doc="run name; the run directory is `runs/<name>`", pattern=RECIPE_NAME_RE.pattern)
    seed: int = _f(1234, doc="seed for data generation, splits, initialization and batch order", min=0)
    data: DataConfig = _f(doc="parallel text", factory=DataConfig)
    tokenizer: TokenizerConfig = _f(doc="subword tokenizer", factory=TokenizerConfig)
    model: ModelConfig = _f(doc="encoder-decoder Transformer (Marian/BART family)", factory=ModelConfig)
    teacher: TeacherConfig = _f(doc="FP32 teacher", factory=TeacherConfig)
    train: TrainConfig = _f(doc="teacher training", factory=TrainConfig)
    runtime: RuntimeConfig = _f(doc="host generation loop", factory=RuntimeConfig)
    eval: EvalConfig = _f(doc="evaluation", factory=EvalConfig)
    ladder: LadderConfig = _f(doc="diagnostic ladder", factory=LadderConfig)
    qat: QatConfig = _f(doc="quantization-aware training", factory=QatConfig)
    distill: DistillConfig = _f(doc="distillation into a student", factory=DistillConfig)
    export: ExportConfig = _f(doc="TFLite export", factory=ExportConfig)
    gates: GatesConfig = _f(doc="quality gates on the chosen artifacts", factory=GatesConfig)

    def section_hash(self, *sections: str, leave_out: tuple[str, ...] = ()) -> str:
        """sha256 of the named sections (plus the seed), used to skip unchanged stages. `leave_out`: dotted keys
        ("model.layernorm_variance") a stage does not depend on."""
        payload = {s: to_dict(getattr(self, s)) for s in sections}
        for key in leave_out:
            section, name = key.split(".")
            payload[section].pop(name)
        payload["seed"] = self.seed
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# === Validation ===

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return str(tp)


def _show(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Validator:
    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def fail(self, path: str, value: Any, expected: str) -> None:
        self.problems.append((path, f"got {_show(value)}; expected {expected}"))

    def dataclass_(self, cls: type, raw: Any, path: str) -> Any:
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            self.fail(path or "<top level>", raw, "a mapping of keys")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                key_path = f"{path}.{key}" if path else str(key)
                self.problems.append((key_path, f"unknown key; allowed keys: {', '.join(sorted(fields))}"))
        values = {}
        for name, f in fields.items():
            key_path = f"{path}.{name}" if path else name
            if name in raw:
                values[name] = self.value(hints[name], raw[name], key_path, f.metadata)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.problems.append((key_path, f"required key is missing; expected {_type_name(hints[name])}"))
        try:
            return cls(**values)
        except TypeError:
            return None

    def value(self, tp: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.dataclass_(tp, raw, path)
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if raw is None and type(None) in args:
                return None
            inner = [a for a in args if a is not type(None)]
            return self.value(inner[0], raw, path, meta)
        if origin is Literal:
            allowed = typing.get_args(tp)
            if raw not in allowed or type(raw) is not type(allowed[0]):
                self.fail(path, raw, _type_name(tp))
            return raw
        if origin is tuple:
            return self.sequence(tp, raw, path, meta)
        if origin is dict:
            return self.mapping(tp, raw, path, meta)
        return self.scalar(tp, raw, path, meta)

    def scalar(self, tp: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        ok = {
            int: isinstance(raw, int) and not isinstance(raw, bool),
            float: isinstance(raw, (int, float)) and not isinstance(raw, bool),
            bool: isinstance(raw, bool),
            str: isinstance(raw, str),
        }[tp]
        expected = _type_name(tp)
        if not ok:
            self.fail(path, raw, expected + _range_text(meta))
            return raw
        value = float(raw) if tp is float else raw
        if "choices" in meta and value not in meta["choices"]:
            self.fail(path, raw, "one of " + ", ".join(meta["choices"]))
        if "pattern" in meta and not re.match(meta["pattern"], value):
            self.fail(path, raw, f"a string matching {meta['pattern']} (letters, digits, _ . -)")
        if isinstance(value, (int, float)) and not _in_range(value, meta):
            self.fail(path, raw, expected + _range_text(meta))
        return value

    def sequence(self, tp: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        args = typing.get_args(tp)
        if not isinstance(raw, (list, tuple)):
            self.fail(path, raw, "a list")
            return raw
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(self.value(args[0], v, f"{path}[{i}]", meta) for i, v in enumerate(raw))
        if len(raw) != len(args):
            self.fail(path, raw, f"a list of {len(args)} values")
            return tuple(raw)
        out = tuple(self.value(a, v, f"{path}[{i}]", meta) for i, (a, v) in enumerate(zip(args, raw)))
        if all(isinstance(v, (int, float)) for v in out) and list(out) != sorted(out):
            self.fail(path, raw, "values in non-decreasing order [min, max]")
        return out

    def mapping(self, tp: Any, raw: Any, path: str, meta: Mapping[str, Any]) -> Any:
        _, value_tp = typing.get_args(tp)
        if not isinstance(raw, Mapping):
            self.fail(path, raw, "a mapping")
            return raw
        allowed = meta.get("keys")
        out = {}
        for key, v in raw.items():
            if allowed is not None and key not in allowed:
                self.problems.append((f"{path}.{key}", f"unknown key; allowed keys: {', '.join(sorted(allowed))}"))
                continue
            out[key] = self.value(value_tp, v, f"{path}.{key}", meta)
        return out


def _in_range(value: float, meta: Mapping[str, Any]) -> bool:
    if "min" in meta and value < meta["min"]:
        return False
    if "max" in meta and value > meta["max"]:
        return False
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        return False
    return True


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = []
    if "min" in meta:
        parts.append(f">= {meta['min']}")
    if "min_exclusive" in meta:
        parts.append(f"> {meta['min_exclusive']}")
    if "max" in meta:
        parts.append(f"<= {meta['max']}")
    return (" " + " and ".join(parts)) if parts else ""


def _cross_checks(recipe: Recipe) -> list[tuple[str, str]]:
    """Constraints that involve more than one key."""
    problems = []
    m, d = recipe.model, recipe.data
    if m.d_model % m.attention_heads:
        problems.append(("model.attention_heads", f"got {m.attention_heads}; expected a divisor of model.d_model ({m.d_model})"))
    if m.position_embedding == "sinusoidal" and m.d_model % 2:
        problems.append(("model.d_model", f"got {m.d_model}; expected an even width for sinusoidal positions"))
    if d.tn_en.min_entities > d.tn_en.max_entities:
        problems.append(("data.tn_en.min_entities", f"got {d.tn_en.min_entities}; expected <= data.tn_en.max_entities ({d.tn_en.max_entities})"))
    if d.source == "builtin" and not any(w > 0 for w in d.tn_en.classes.values()):
        problems.append(("data.tn_en.classes", "got no class with weight > 0; expected at least one of " + ", ".join(TN_EN_CLASSES)))
    if d.source == "builtin":
        held_out = d.splits.validation + d.splits.test + d.splits.calibration
        if held_out >= d.tn_en.num_examples:
            problems.append(("data.tn_en.num_examples", f"got {d.tn_en.num_examples}; expected more than the held-out splits ({held_out})"))
    if d.source == "hub" and not d.hub.name:
        problems.append(("data.hub.name", "got null; expected a dataset id when data.source is \"hub\""))
    if d.source == "files" and not d.files.train:
        problems.append(("data.files.train", "got null; expected a file path when data.source is \"files\""))
    if recipe.teacher.source == "train" and recipe.teacher.path is not None:
        problems.append(("teacher.path", f"got {_show(recipe.teacher.path)}; expected null when teacher.source is \"train\""))
    if recipe.teacher.source == "hf" and not recipe.teacher.path:
        problems.append(("teacher.path", "got null; expected a checkpoint directory when teacher.source is \"hf\""))
    rt = recipe.runtime
    ex = recipe.export.variant
    if ex != "auto" and ex not in recipe.ladder.variants:
        problems.append(("export.variant", f"got {_show(ex)}; expected \"auto\" or one of ladder.variants "
                                           f"({', '.join(recipe.ladder.variants)})"))
    if recipe.qat.enabled != ("qat-int8" in recipe.ladder.variants):
        problems.append(("qat.enabled", f"got {_show(recipe.qat.enabled)}; expected true exactly when ladder.variants "
                                        f"lists qat-int8 (QAT output is evaluated and exported as that variant)"))
    students = [v for v in recipe.ladder.variants if v in STUDENT_VARIANTS]
    if recipe.distill.enabled != ("student-fp32" in recipe.ladder.variants):
        problems.append(("distill.enabled", f"got {_show(recipe.distill.enabled)}; expected true exactly when "
                                            f"ladder.variants lists student-fp32 (the student is evaluated as that variant)"))
    elif students and not recipe.distill.enabled:
        problems.append(("ladder.variants", f"got {', '.join(students)}; expected no student variant while "
                                            f"distill.enabled is false"))
    st = recipe.distill.student
    if st.d_model % st.attention_heads:
        problems.append(("distill.student.attention_heads", f"got {st.attention_heads}; expected a divisor of "
                                                            f"distill.student.d_model ({st.d_model})"))
    if st.position_embedding == "sinusoidal" and st.d_model % 2:
        problems.append(("distill.student.d_model", f"got {st.d_model}; expected an even width for sinusoidal positions"))
    if rt.max_new_tokens is not None and rt.max_new_tokens > m.target_length:
        problems.append(("runtime.max_new_tokens", f"got {rt.max_new_tokens}; expected <= model.target_length ({m.target_length})"))
    return problems


def parse_recipe(raw: Any) -> Recipe:
    """Validate an already-loaded YAML document. Raises RecipeError listing every problem."""
    v = _Validator()
    recipe = v.dataclass_(Recipe, raw, "")
    if v.problems or recipe is None:
        raise RecipeError(v.problems or [("", "the recipe could not be read")])
    problems = _cross_checks(recipe)
    if problems:
        raise RecipeError(problems)
    return recipe


def parse_section(cls: type, raw: Any, path: str) -> Any:
    """Validate one section on its own (e.g. the runtime settings stored in an artifacts manifest)."""
    v = _Validator()
    section = v.dataclass_(cls, raw, path)
    if v.problems or section is None:
        raise RecipeError(v.problems or [(path, "could not be read")])
    return section


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError([("", f"recipe file {str(path)!r} does not exist")])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError([("", f"{path} is not valid YAML: {err}")]) from None
    return parse_recipe(raw)


def to_dict(obj: Any) -> Any:
    """Plain dict/list form (tuples as lists), for YAML and hashing."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def dump_resolved(recipe: Recipe) -> str:
    return yaml.safe_dump(to_dict(recipe), sort_keys=False, default_flow_style=None)


def iter_keys(cls: type = Recipe, prefix: str = "") -> typing.Iterator[tuple[str, str, Any, str]]:
    """(key path, type text, default, doc) for every key, for recipes/README.md."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield path, "section", None, f.metadata.get("doc", "")
            yield from iter_keys(tp, path + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        text = _type_name(tp) + _range_text(f.metadata)
        if "choices" in f.metadata:
            text += " (each one of " + ", ".join(f.metadata["choices"]) + ")"
        yield path, text, to_dict(default), f.metadata.get("doc", "")
