"""Quality metrics (sacrebleu) and first-step source sensitivity (DESIGN section 6)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sacrebleu

from s2s_qat.runtime import Seq2SeqBackend, left_pad_prefix, pad_source
from s2s_qat.tokenizer import TextCodec


def quality(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """BLEU, chrF and exact match, all in percent."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    bleu = sacrebleu.corpus_bleu(hypotheses, [references]).score
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    exact = 100.0 * float(np.mean([h.strip() == r.strip() for h, r in zip(hypotheses, references)])) if references else 0.0
    return {"bleu": float(bleu), "chrf": float(chrf), "exact_match": exact}


def first_step_logits(backend: Seq2SeqBackend, codec: TextCodec, sources: list[str]) -> np.ndarray:
    """(N, V) float logits of the first decoder step (prefix = BOS) for each source."""
    dec_ids, dec_mask = left_pad_prefix([codec.bos_id], backend.target_length, codec.pad_id)
    rows = []
    for text in sources:
        ids, mask = pad_source(codec.encode_source(text, backend.source_length).ids, backend.source_length, codec.pad_id)
        rows.append(np.asarray(backend.decode_step(dec_ids, dec_mask, backend.encode(ids, mask), mask), np.float64))
    return np.stack(rows)


def _centered_unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=-1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Centered cosine of each row of `a` with the same row of `b`: (N, V), (N, V) -> (N,)."""
    return np.sum(_centered_unit(a) * _centered_unit(b), axis=-1)


@dataclass(frozen=True)
class SourceSensitivity:
    pair_cosine: float            # mean centered cosine between first-step logits of different sources
    cosine_to_fp32: float         # mean centered cosine to the FP32 teacher's logits, same source
    argmax_agreement_fp32: float  # fraction of sources whose first-step argmax matches FP32's
    top5_overlap_pairs: float     # mean top-5 overlap between different sources (1.0: source-blind)

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


def source_sensitivity(logits: np.ndarray, fp32_logits: np.ndarray) -> SourceSensitivity:
    """logits, fp32_logits: (N, V) first-step logits for the same N sources."""
    u = _centered_unit(logits)
    n = len(u)
    iu = np.triu_indices(n, k=1)
    pair = float((u @ u.T)[iu].mean())
    to_fp32 = float(np.mean(row_cosine(logits, fp32_logits)))
    agree = float(np.mean(logits.argmax(-1) == fp32_logits.argmax(-1)))
    top = np.argsort(-logits, axis=-1)[:, :5]
    overlaps = [len(set(top[i]) & set(top[j])) / 5.0 for i, j in zip(*iu)]
    return SourceSensitivity(pair, to_fp32, agree, float(np.mean(overlaps)))
