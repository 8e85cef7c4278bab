"""Quality gates on the chosen artifacts (DESIGN section 6): each check says its value, threshold and why."""
from __future__ import annotations

from typing import Callable

from s2s_qat.recipe import AUTO_ARTIFACT_ORDER, GatesConfig, Recipe
from s2s_qat.validate.evaluate import VariantResult


def artifact_variant(recipe: Recipe) -> str | None:
    """The ladder variant whose graphs become `artifacts/` (None: the ladder exports no candidate)."""
    if recipe.export.variant != "auto":
        return recipe.export.variant
    return next((v for v in AUTO_ARTIFACT_ORDER if v in recipe.ladder.variants), None)


def _sensitivity(key: str) -> Callable[[VariantResult], float | None]:
    return lambda v: (v.source_sensitivity or {}).get(key)


# gate -> (value of the chosen variant given fp32, comparison, readable description)
_GATES: dict[str, tuple[Callable[[VariantResult, VariantResult], float | None], str, str]] = {
    "min_bleu": (lambda c, f: c.bleu, ">=", "test BLEU"),
    "max_bleu_drop": (lambda c, f: None if c.bleu is None or f.bleu is None else f.bleu - c.bleu, "<=",
                      "BLEU drop from fp32"),
    "min_cosine_to_fp32": (lambda c, f: _sensitivity("cosine_to_fp32")(c), ">=",
                           "first-step logits cosine to FP32"),
    "max_pair_cosine_delta": (lambda c, f: None if _sensitivity("pair_cosine")(c) is None
                              else _sensitivity("pair_cosine")(c) - _sensitivity("pair_cosine")(f), "<=",
                              "pair cosine rise over FP32 (source-blindness)"),
    "max_float_ops": (lambda c, f: c.float_ops, "<=", "float ops on the compute path"),
    "max_quantize_ops": (lambda c, f: c.quantize_ops, "<=", "QUANTIZE/DEQUANTIZE ops"),
}


def check_gates(gates: GatesConfig, chosen: VariantResult, fp32: VariantResult) -> dict:
    """report.json's `gates`: {"passed", "checks": [{name, value, threshold, passed, message}]}."""
    checks = []
    configured = [(name, getattr(gates, name)) for name in _GATES if getattr(gates, name) is not None]
    if chosen.status != "ok":
        checks.append({"name": "artifacts", "value": None, "threshold": None, "passed": False,
                       "message": f"the chosen variant {chosen.name} is {chosen.status}: {chosen.error}"})
    for name, threshold in configured:
        value_fn, op, what = _GATES[name]
        value = value_fn(chosen, fp32) if chosen.status == "ok" else None
        if value is None:
            passed = False
            message = f"{what} is not available for {chosen.name}" + (
                " (a Keras model has no TFLite ops; add a TFLite variant to ladder.variants)"
                if chosen.name == "fp32" and name in ("max_float_ops", "max_quantize_ops") else "")
        else:
            passed = value >= threshold if op == ">=" else value <= threshold
            message = f"{what} of {chosen.name} is {value:.4g}; allowed {op} {threshold:.4g}"
        checks.append({"name": name, "value": None if value is None else float(value), "threshold": float(threshold),
                       "passed": bool(passed), "message": message})
    return {"passed": all(c["passed"] for c in checks), "variant": chosen.name, "checks": checks}
