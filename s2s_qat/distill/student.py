"""The student: its config (architecture from `distill.student`, everything the data fixes from the teacher),
its training settings and the learned projection for hidden-state distillation."""
from __future__ import annotations

import dataclasses
import hashlib

import tensorflow as tf

from s2s_qat.models import TransformerConfig
from s2s_qat.models.layers import Linear
from s2s_qat.recipe import StudentModel


def student_config(teacher: TransformerConfig, student: StudentModel) -> TransformerConfig:
    """The teacher's config with the student's architecture: same vocabulary, special ids, lengths, mask value,
    LayerNorm epsilon and logits bias, so the student reads the same batches and exports the same graphs."""
    arch = dataclasses.asdict(student)
    return dataclasses.replace(teacher, position_offset=0, **arch)


def sequence_targets_digest(teacher_digest: str, rows: int, beam_size: int, length_penalty: float,
                            max_new_tokens: int | None, no_repeat_ngram_size: int) -> str:
    """What the cached sequence-level targets depend on: the teacher and the decoding settings."""
    key = f"{teacher_digest}:{rows}:{beam_size}:{length_penalty}:{max_new_tokens}:{no_repeat_ngram_size}"
    return hashlib.sha256(key.encode()).hexdigest()


class HiddenProjection(tf.Module):
    """Learned map from the student's encoder width to the teacher's (identity when they are equal). Trained with
    the student, saved in its training checkpoint, not part of the exported student."""

    def __init__(self, student_width: int, teacher_width: int):
        super().__init__(name="hidden_projection")
        self.linear = None
        if student_width != teacher_width:
            self.linear = Linear(teacher_width, name="hidden_projection")
            self.linear.build((None, student_width))

    def __call__(self, x):
        return x if self.linear is None else self.linear(x)
