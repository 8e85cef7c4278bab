"""Distillation of the FP32 teacher into a smaller, quantization-friendly student (DESIGN section 5)."""
from s2s_qat.distill.student import HiddenProjection, sequence_targets_digest, student_config

__all__ = ["HiddenProjection", "sequence_targets_digest", "student_config"]
