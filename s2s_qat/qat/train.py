"""QAT training pieces: teacher-generated prefixes, the mixed batch source, and the distillation loss."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from s2s_qat.models import Seq2SeqCore
from s2s_qat.recipe import QatConfig, TrainConfig
from s2s_qat.training.batches import EncodedSplit
from s2s_qat.training.decode import teacher_greedy  # noqa: F401 - re-exported
from s2s_qat.training.kd import kd_loss


def qat_train_config(base: TrainConfig, q: QatConfig) -> TrainConfig:
    """The Trainer settings of a QAT run: the teacher's, with the qat section's schedule and budget."""
    return dataclasses.replace(base, batch_size=q.batch_size, max_steps=q.max_steps, learning_rate=q.learning_rate,
                               warmup_steps=q.warmup_steps, schedule=q.schedule, label_smoothing=q.label_smoothing,
                               eval_every=q.eval_every, checkpoint_every=q.eval_every,
                               early_stopping_patience=q.early_stopping_patience, max_minutes=q.max_minutes)


def outputs_as_split(input_ids: np.ndarray, attention_mask: np.ndarray, outputs: np.ndarray, bos: int,
                     pad: int) -> EncodedSplit:
    """Training rows whose labels are `outputs` (teacher tokens + EOS) for these sources."""
    label_mask = (np.cumsum(outputs == pad, axis=1) == 0)  # real tokens up to the first PAD
    lengths = label_mask.sum(1)
    labels = np.where(label_mask, outputs, pad).astype(np.int32)
    dec = np.full_like(labels, pad)
    dec[:, 0] = bos
    dec[:, 1:] = np.where(label_mask[:, :-1], labels[:, :-1], pad)
    dec_mask = (np.arange(labels.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
    return EncodedSplit(input_ids, attention_mask, dec, dec_mask, labels,
                        label_mask.astype(np.float32), 0, 0)


class MixedPrefixSplit:
    """The training split where a fixed, seeded share of rows (among the first `len(teacher)`) is replaced by the
    teacher's own output for the same source, so QAT also sees the prefixes it meets while generating."""

    def __init__(self, gold: EncodedSplit, teacher: EncodedSplit, fraction: float, seed: int):
        self.gold, self.teacher = gold, teacher
        rng = np.random.default_rng([seed, 7])
        self.use_teacher = (rng.random(len(gold)) < fraction) & (np.arange(len(gold)) < len(teacher))

    def __len__(self) -> int:
        return len(self.gold)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        batch = self.gold.batch(idx)
        pick = self.use_teacher[idx]
        if pick.any():
            alt = self.teacher.batch(idx[pick])
            for key, value in alt.items():
                batch[key] = batch[key].copy()
                batch[key][pick] = value
        return batch


def outputs_digest(teacher_digest: str, rows: int) -> str:
    return hashlib.sha256(f"{teacher_digest}:{rows}".encode()).hexdigest()


def qat_loss(teacher: Seq2SeqCore, q: QatConfig):
    """The QAT loss: distillation from the FP32 model the QAT model starts from (see `kd_loss`)."""
    return kd_loss(teacher, word_weight=q.distill_weight, temperature=q.temperature, label_smoothing=q.label_smoothing,
                   encoder_mse_weight=q.encoder_mse_weight, cross_attention_mse_weight=q.cross_attention_mse_weight)
