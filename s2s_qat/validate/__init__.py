"""Validation: metrics, source sensitivity and variant evaluation through the host loop."""
from s2s_qat.validate.evaluate import VariantResult, evaluate_variant
from s2s_qat.validate.metrics import SourceSensitivity, first_step_logits, quality, source_sensitivity

__all__ = ["VariantResult", "evaluate_variant", "SourceSensitivity", "first_step_logits", "quality",
           "source_sensitivity"]
