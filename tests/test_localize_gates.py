"""Localization of int8 error, gates on the chosen variant, and int8 argmax in greedy decoding."""
import numpy as np
import pytest

from harness import TINY, source_batch, tiny_core
from s2s_qat.export import convert
from s2s_qat.models import build_decoder_step
from s2s_qat.recipe import parse_recipe
from s2s_qat.runtime import KerasBackend, left_pad_prefix
from s2s_qat.runtime.generate import GenerationSettings, greedy
from s2s_qat.validate import VariantResult
from s2s_qat.validate.gates import artifact_variant, check_gates
from s2s_qat.validate.localize import localize, tensor_label


@pytest.fixture(scope="module")
def decoder_rows():
    core = tiny_core()
    ids, mask = source_batch(TINY, 16)
    keras = KerasBackend(core)
    rows = []
    for i in range(16):
        memory = np.asarray(keras.encode(ids[i:i + 1], mask[i:i + 1]), np.float32)
        d_ids, d_mask = left_pad_prefix([1, 5, 6, 7][: 1 + i % 4], TINY.target_length, 0)
        rows.append({"decoder_input_ids": d_ids, "decoder_attention_mask": d_mask, "encoder_hidden_states": memory,
                     "encoder_attention_mask": mask[i:i + 1]})
    return core, rows


def _localize(core, rows, reference):
    model = build_decoder_step(core, reference=reference)
    return localize(convert(model, "float"), convert(model, "int8", lambda: iter(rows)), "decoder_step", rows[:8])


def test_tensor_labels_keep_layer_and_role():
    assert tensor_label("decoder_step/body/decoder_layer_0/encoder_attn/scores/MatMul;x/y") == \
        "decoder_layer_0/encoder_attn/scores"
    assert tensor_label("decoder_step_reference/body/mask_bias_1/sub") == "mask_bias"
    assert tensor_label("e/body/encoder_layer_1/ffn_residual_2/add") == "encoder_layer_1/ffn_residual"
    assert tensor_label("d/body/decoder_layer_0/final_layer_norm/Rsqrt") == "decoder_layer_0/final_layer_norm/Rsqrt"


@pytest.mark.slow
def test_localization_names_the_mask_and_scores_of_the_reference_graph(decoder_rows):
    """Reference graph (-1e9 mask) PTQ: the {0,1} mask and every attention's scores share the mask's int8 range
    (one step = 1e9/255), so they carry nothing (relative RMSE 1.0) and are ranked where the error starts.
    Measured on this tiny model: mask_bias 1.000, scores 1.000 (added 0.70-0.98), logits 0.25."""
    core, rows = decoder_rows
    ref = _localize(core, rows, reference=True)
    top = ref[:8]
    assert any(r.label == "mask_bias" and r.relative_rmse > 0.99 for r in top), [(r.label, r.added) for r in top]
    scores = [r for r in ref if r.label.endswith("/scores")]
    assert len(scores) == 2 * TINY.decoder_layers and all(r.relative_rmse > 0.99 for r in scores)
    assert all(r.scale > 1e6 for r in scores)  # the -1e9 range
    assert all(r in top for r in scores[:2])
    logits = next(r for r in ref if r.label == "logits")
    # Deployment graph (bounded mask) under the same calibration: scores keep their information.
    dep = _localize(core, rows, reference=False)
    dep_scores = [r for r in dep if r.label.endswith("/scores")]
    assert len(dep_scores) == 2 * TINY.decoder_layers and max(r.relative_rmse for r in dep_scores) < 0.2
    assert not any(r.label == "mask_bias" for r in dep[:10] if r.relative_rmse > 0.1)
    dep_logits = next(r for r in dep if r.label == "logits")
    assert dep_logits.relative_rmse < 0.1 < logits.relative_rmse
    assert dep == sorted(dep, key=lambda r: (-r.added, r.order))


def _row(name, bleu=90.0, pair=0.1, cos=0.99, float_ops=0, q_ops=0, status="ok", error=None):
    return VariantResult(name=name, status=status, error=error, bleu=bleu if status == "ok" else None,
                         source_sensitivity={"pair_cosine": pair, "cosine_to_fp32": cos, "argmax_agreement_fp32": 1.0}
                         if status == "ok" else None, float_ops=float_ops, quantize_ops=q_ops)


def _gates(**gates):
    return parse_recipe({"name": "g", "gates": gates}).gates


def test_gates_pass_and_fail_with_their_reason():
    fp32 = _row("fp32", bleu=95.0, pair=0.12, cos=1.0, float_ops=None, q_ops=None)
    good = _row("ptq-int8", bleu=94.6, pair=0.13, cos=0.98)
    gates = _gates(max_bleu_drop=0.5, min_cosine_to_fp32=0.95, max_pair_cosine_delta=0.05, max_float_ops=0,
                   max_quantize_ops=0, min_bleu=90)
    result = check_gates(gates, good, fp32)
    assert result["passed"] and len(result["checks"]) == 6 and result["variant"] == "ptq-int8"
    drop = next(c for c in result["checks"] if c["name"] == "max_bleu_drop")
    assert drop["value"] == pytest.approx(0.4) and drop["threshold"] == 0.5

    blind = _row("ptq-int8", bleu=93.0, pair=0.80, cos=0.5, float_ops=3, q_ops=2)
    result = check_gates(gates, blind, fp32)
    failed = {c["name"]: c for c in result["checks"] if not c["passed"]}
    assert not result["passed"]
    assert set(failed) == {"max_bleu_drop", "min_cosine_to_fp32", "max_pair_cosine_delta", "max_float_ops",
                           "max_quantize_ops"}
    assert failed["max_pair_cosine_delta"]["value"] == pytest.approx(0.68)
    assert "BLEU drop from fp32 of ptq-int8 is 2; allowed <= 0.5" == failed["max_bleu_drop"]["message"]
    assert failed["max_float_ops"]["message"] == "float ops on the compute path of ptq-int8 is 3; allowed <= 0"


def test_gates_on_a_failed_variant_or_on_fp32():
    fp32 = _row("fp32", bleu=95.0, float_ops=None, q_ops=None)
    broken = _row("ptq-int8", status="failed", error="export failed: boom")
    result = check_gates(_gates(), broken, fp32)  # no gates configured: a failed chosen variant still fails
    assert not result["passed"] and "ptq-int8 is failed: export failed: boom" in result["checks"][0]["message"]
    result = check_gates(_gates(max_float_ops=0), fp32, fp32)
    assert not result["passed"] and "not available for fp32" in result["checks"][0]["message"]


def test_artifact_variant_choice_and_validation():
    assert artifact_variant(parse_recipe({"name": "a"})) is None  # the default ladder exports nothing
    assert artifact_variant(parse_recipe({"name": "a", "ladder": {"variants": ["fp32", "ptq-int8"]}})) == "ptq-int8"
    with_qat = {"name": "a", "ladder": {"variants": ["fp32", "ptq-int8", "qat-int8"]}, "qat": {"enabled": True}}
    assert artifact_variant(parse_recipe(with_qat)) == "qat-int8"  # QAT leads the automatic choice
    explicit = {"name": "a", "ladder": {"variants": ["fp32", "float-tflite"]}, "export": {"variant": "float-tflite"}}
    assert artifact_variant(parse_recipe(explicit)) == "float-tflite"
    from s2s_qat.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"export.variant.*one of ladder.variants \(fp32\)"):
        parse_recipe({"name": "a", "export": {"variant": "ptq-int8"}})
    with pytest.raises(RecipeError, match=r"gates.max_float_ops"):
        parse_recipe({"name": "a", "gates": {"max_float_ops": -1}})


class _Int8Logits:
    """A backend whose logits exist only as int8: greedy must argmax them without dequantizing."""
    source_length, target_length = 4, 6

    def __init__(self, script):
        self.script, self.calls = script, 0

    def encode(self, ids, mask):
        return None

    def decode_step(self, *args):
        raise AssertionError("greedy decoding must use decode_step_raw")

    def decode_step_raw(self, ids, mask, memory, enc_mask):
        raw = np.full(8, -128, np.int8)
        best, second = self.script[self.calls]
        raw[best], raw[second] = 127, 126
        self.calls += 1
        return raw

    def dequantize_logits(self, raw):
        return (raw.astype(np.float32) + 128) * 0.1


def test_greedy_takes_the_int8_argmax_and_honours_banned_tokens():
    settings = GenerationSettings(bos_id=1, eos_id=2, pad_id=0, max_new_tokens=6, no_repeat_ngram_size=1)
    backend = _Int8Logits([(5, 6), (5, 7), (2, 3)])  # 5 again is banned (1-gram repeat): 7 instead
    hyp = greedy(backend, None, np.ones((1, 4), np.int32), settings)
    assert hyp.tokens == (5, 7, 2) and hyp.finished
    # log-probabilities from the dequantized logits with banned tokens removed: 25.5 / 25.4 for the top two, 0 else
    step1 = 25.5 - np.log(np.exp(25.5) + np.exp(25.4) + 5)  # 8 tokens: 5, 6 on top, BOS banned, 5 others at 0
    step2 = 25.4 - np.log(np.exp(25.4) + 5)                 # 5 (top) and BOS banned; 7 at 25.4 and 5 others at 0
    step3 = 25.5 - np.log(np.exp(25.5) + np.exp(25.4) + 3)  # 1, 5, 7 banned; 2, 3 on top and 3 others at 0
    assert hyp.logprob == pytest.approx(step1 + step2 + step3, rel=1e-6)
