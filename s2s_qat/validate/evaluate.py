"""Evaluate one variant through the host loop: quality, source sensitivity, speed."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from s2s_qat.recipe import Recipe
from s2s_qat.runtime import Seq2SeqBackend, Translator
from s2s_qat.tokenizer import TextCodec
from s2s_qat.validate.metrics import first_step_logits, quality, source_sensitivity


@dataclass
class VariantResult:
    """One row of report.json's `variants` (DESIGN section 7)."""
    name: str
    status: str = "ok"
    error: str | None = None
    bleu: float | None = None
    chrf: float | None = None
    exact_match: float | None = None
    source_sensitivity: dict | None = None
    float_ops: int | None = None        # TFLite variants only
    quantize_ops: int | None = None     # TFLite variants only
    op_counts: dict = field(default_factory=dict)
    size_bytes: int | None = None
    tokens_per_second: float | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def evaluate_variant(name: str, backend: Seq2SeqBackend, codec: TextCodec, recipe: Recipe, sources: list[str],
                     references: list[str], fp32_first_logits: np.ndarray | None, size_bytes: int | None,
                     progress: bool = True) -> tuple[VariantResult, list[str], np.ndarray]:
    """Returns the result row, the hypotheses and this variant's first-step logits."""
    translator = Translator.create(codec, backend, recipe.runtime)
    hyps = [translator.translate(s) for s in tqdm(sources, desc=f"eval {name}", unit="sent", disable=not progress,
                                                  dynamic_ncols=True)]
    result = VariantResult(name=name, size_bytes=size_bytes, **quality(hyps, references))
    probe = sources[: recipe.eval.sensitivity_sources]
    logits = first_step_logits(backend, codec, probe)
    result.source_sensitivity = source_sensitivity(logits, fp32_first_logits if fp32_first_logits is not None
                                                   else logits).as_dict()
    result.tokens_per_second = translator.stats.tokens_per_second
    result.extra = {"truncated_sources": translator.stats.truncated_sources,
                    "unfinished_generations": translator.stats.unfinished, "sentences": len(sources)}
    return result, hyps, logits
