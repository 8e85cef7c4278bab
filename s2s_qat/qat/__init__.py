"""Quantization-aware training on the deployment graphs (DESIGN section 5)."""
from s2s_qat.qat.policy import (POLICY, PolicyError, QuantSpec, QuantState, attach_quantization, calibrate,
                                quantizable_layers, range_table, spec_for)

__all__ = ["POLICY", "PolicyError", "QuantSpec", "QuantState", "attach_quantization", "calibrate",
           "quantizable_layers", "range_table", "spec_for"]
