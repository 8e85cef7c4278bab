"""QAT machinery on tiny models: policy coverage, export to full-INT8, Keras-vs-TFLite parity, the shared boundary,
teacher prefixes and the distillation losses."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from harness import TINY_VARIANTS, source_batch, tiny_core
from s2s_qat.export import inventory
from s2s_qat.models import teacher_forced_logits
from s2s_qat.qat import POLICY, PolicyError, attach_quantization, calibrate, quantizable_layers
from s2s_qat.qat.export import export_qat
from s2s_qat.qat.train import MixedPrefixSplit, outputs_as_split, teacher_greedy
from s2s_qat.runtime import KerasBackend, left_pad_prefix
from s2s_qat.runtime.tflite_backend import TFLiteBackend
from s2s_qat.training.batches import EncodedSplit
from s2s_qat.training.losses import distill_kl, masked_mse

# Measured on the three tiny variants with random weights (calibrated on 32 random rows): mean first-step
# cosine QAT Keras vs TFLite >= 0.9995, logits within 5 int8 steps (BART-like variant; 3 for the others).
MIN_PARITY_COSINE = 0.999
MAX_LOGIT_STEPS = 6


def _decoder_batch(cfg, n, seed=0):
    rng = np.random.default_rng(seed)
    dec = np.zeros((n, cfg.target_length), np.int32)
    dec[:, 0] = cfg.bos_token_id
    for i in range(n):
        length = int(rng.integers(1, cfg.target_length))
        dec[i, 1:length] = rng.integers(4, cfg.vocab_size, length - 1)
    return dec, (dec != cfg.pad_token_id).astype(np.int32)


def _calibrated(seed=0, **overrides):
    core = tiny_core(seed=seed, **overrides)
    state = attach_quantization(core)
    ids, mask = source_batch(core.cfg, 32, seed=seed + 1)
    dec, dmask = _decoder_batch(core.cfg, 32, seed)
    calibrate(core, state, [None], lambda c, _: teacher_forced_logits(c, ids, mask, dec, dmask))
    return core, state


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_policy_covers_every_layer_the_builder_emits(variant):
    core, state = _calibrated(**TINY_VARIANTS[variant])
    types = {type(layer).__name__ for layer, _ in quantizable_layers(core)}
    assert types <= set(POLICY)
    # every quantizer the policy lists for a layer that has tensors of its own is reached by the graphs
    used = {(type(layer).__name__, kind) for layer, _ in quantizable_layers(core)
            for kind in POLICY[type(layer).__name__] if (id(layer), kind) in state.slots}
    assert ("Attention", "softmax") in used and ("Seq2SeqCore", "mask") in used and ("LayerNorm", "inv_std") in used
    assert len(state.slots) > 50


def test_unlisted_layer_or_tensor_fails_with_its_name():
    core = tiny_core()
    core.encoder_blocks[0].extra = tf_keras.layers.Dense(4, name="extra_dense")
    with pytest.raises(PolicyError,
                       match=r"seq2seq/encoder_layer_0/extra_dense \(Dense\) is not in the quantization policy"):
        attach_quantization(core)

    policy = {name: dict(kinds) for name, kinds in POLICY.items()}
    del policy["Attention"]["scores"]
    core = tiny_core()
    state = attach_quantization(core, policy)
    ids, mask = source_batch(core.cfg, 2)
    dec, dmask = _decoder_batch(core.cfg, 2)
    with pytest.raises(PolicyError, match=r"tensor 'scores' of layer seq2seq/encoder_layer_0/self_attn \(Attention\)"):
        calibrate(core, state, [None], lambda c, _: teacher_forced_logits(c, ids, mask, dec, dmask))


def test_fp32_weights_load_into_the_qat_model_by_name(tmp_path):
    teacher = tiny_core(seed=3)
    tf.train.Checkpoint(core=teacher).write(str(tmp_path / "w"))
    student = tiny_core(seed=4)
    tf.train.Checkpoint(core=student).read(str(tmp_path / "w")).assert_existing_objects_matched()
    attach_quantization(student)
    for a, b in zip(teacher.weights, student.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_qat_export_is_full_int8_with_identity_boundary_and_matches_keras(variant):
    core, state = _calibrated(**TINY_VARIANTS[variant])
    blobs = export_qat(core)
    for kind, blob in blobs.items():
        inv = inventory(blob, kind)
        assert (inv.float_ops, inv.quantize_ops) == (0, 0), (kind, inv.float_tensors)
        assert inv.activation_dtypes.get("float32", 0) == 0
    tflite = TFLiteBackend(blobs["encoder"], blobs["decoder_step"])
    # One quantizer at the boundary: the encoder output and the decoder input carry the same int8 parameters,
    # and they are the ones its (min, max) range gives (scale = (max - min) / 255, zero point nudged).
    out, inp = tflite.memory_out, tflite.memory_in
    assert out.dtype == inp.dtype == np.int8
    assert (out.scale, out.zero_point) == (inp.scale, inp.zero_point)
    q = state.slots[(id(core.encoder_output_layer), "output")].weights
    lo, hi = float(q["min_var"].numpy()), float(q["max_var"].numpy())
    assert out.scale == pytest.approx((hi - lo) / 255, rel=1e-5)
    assert out.zero_point == int(round(-128 - lo / out.scale))

    keras = KerasBackend(core)
    cfg = core.cfg
    ids, mask = source_batch(cfg, 12, seed=9)
    dec, _ = _decoder_batch(cfg, 12, seed=9)
    cos = []
    for i in range(12):
        d_ids, d_mask = left_pad_prefix([int(t) for t in dec[i, :3] if t], cfg.target_length, cfg.pad_token_id)
        a = keras.decode_step(d_ids, d_mask, keras.encode(ids[i:i + 1], mask[i:i + 1]), mask[i:i + 1])
        b = tflite.decode_step(d_ids, d_mask, tflite.encode(ids[i:i + 1], mask[i:i + 1]), mask[i:i + 1])
        cos.append(float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)))
        assert np.abs(a - b).max() <= MAX_LOGIT_STEPS * tflite.logits_out.scale + 1e-6
    assert np.mean(cos) >= MIN_PARITY_COSINE

    if variant == "marian_relu_post_ln":  # localization of a QAT export (tensors paired by op order)
        rows = _localize_tiny(core, state, blobs)
        labels = {r["label"] for r in rows}
        assert {"encoder_hidden_states", "logits", "encoder_layer_0/self_attn/scores"} <= labels
        # measured: worst relative error 0.05 on this model; a mis-paired twin reads ~1.0
        assert max(r["relative_rmse"] for r in rows) < 0.3
        # The op-by-op probe: the first projections' int8 values are the fake-quantized Keras values on the same
        # grid but for rare one-step rounding differences (a wrong grid or a mis-paired tensor differs everywhere).
        from s2s_qat.qat.probe import encoder_captures, step_differences
        probe = step_differences(blobs["encoder"], ids[:1], mask[:1], encoder_captures(core, ids[:1], mask[:1]))
        first = [r for r in probe if "encoder_layer_0/self_attn/" in r["tensor"] and r["op"] == "FULLY_CONNECTED"]
        assert len(first) == 3 and all(r["differ"] < 0.05 and r["max_steps"] <= 1 for r in first), first
        assert {"SOFTMAX", "RSQRT", "MEAN", "BATCH_MATMUL"} <= {r["op"] for r in probe}
        # Kernel by kernel, from the kernel's own int8 inputs: MEAN differs from one rounding of the exact mean
        # (measured 19% of its outputs, one step) and BATCH_MATMUL / MUL rarely; TFLite's fixed-point rescale
        # (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT: two roundings) reproduces all three exactly.
        from s2s_qat.qat.probe import kernel_differences
        kernels = [r for i in range(4) for r in kernel_differences(blobs["encoder"], {"input_ids": ids[i:i + 1],
                                                                                      "attention_mask": mask[i:i + 1]})]
        by_op = {op: [r for r in kernels if r["op"] == op] for op in ("MEAN", "BATCH_MATMUL", "MUL")}
        assert all(r["differ_fixed_point"] == 0.0 for rows in by_op.values() for r in rows), by_op
        assert np.mean([r["differ"] for r in by_op["MEAN"]]) > 0.05
        assert all(r["max_steps"] <= 1 for r in kernels)
        # One graph from each backend (the probe's --graphs split): the Keras encoder output, put on the TFLite
        # boundary grid, is the TFLite encoder's but for the compounded rounding differences of two layers
        # (measured: max 4 steps; a wrong scale or zero point is off by tens), and each hybrid's decoder step is
        # exactly its own backend's on the memory it is handed.
        from s2s_qat.qat.probe import HybridBackend
        kt, tk = HybridBackend(keras, tflite, tflite.memory_in), HybridBackend(tflite, keras, tflite.memory_in)
        m_kt, m_t = kt.encode(ids[:1], mask[:1]), tflite.encode(ids[:1], mask[:1])
        steps = np.abs(m_kt.astype(np.int32) - m_t)
        assert m_kt.dtype == np.int8 and steps.max() <= 6 and steps.mean() <= 1.5, (steps.max(), steps.mean())
        d_ids, d_mask = left_pad_prefix([cfg.bos_token_id, 5], cfg.target_length, cfg.pad_token_id)
        np.testing.assert_array_equal(kt.decode_step_raw(d_ids, d_mask, m_t, mask[:1]),
                                      tflite.decode_step_raw(d_ids, d_mask, m_t, mask[:1]))
        m_tk = tk.encode(ids[:1], mask[:1])
        np.testing.assert_array_equal(tk.decode_step(d_ids, d_mask, m_tk, mask[:1]),
                                      keras.decode_step(d_ids, d_mask, m_tk, mask[:1]))
        assert not hasattr(tk, "decode_step_raw")  # greedy on the Keras decoder uses its float logits


def test_layernorm_variance_matmul_is_the_same_float_function_and_an_exact_int32_sum_in_int8():
    """`model.layernorm_variance: matmul`: the same FP32 logits as `mul` (same weights), and in the full-INT8 export
    each LayerNorm's variance is one BATCH_MATMUL (int32 sum of int8 squares) instead of MUL + MEAN."""
    mul, matmul = tiny_core(seed=3), tiny_core(seed=3, layernorm_variance="matmul")
    for a, b in zip(mul.weights, matmul.weights):
        assert a.name == b.name
        b.assign(a)
    ids, mask = source_batch(mul.cfg, 6, seed=4)
    dec, dmask = _decoder_batch(mul.cfg, 6, seed=4)
    np.testing.assert_allclose(teacher_forced_logits(matmul, ids, mask, dec, dmask).numpy(),
                               teacher_forced_logits(mul, ids, mask, dec, dmask).numpy(), atol=1e-5)

    norms = {"encoder": 2 * mul.cfg.encoder_layers, "decoder_step": 3 * mul.cfg.decoder_layers}  # post-LN blocks
    counts = {}
    for name, overrides in (("mul", {}), ("matmul", {"layernorm_variance": "matmul"})):
        core, _ = _calibrated(seed=3, **overrides)
        for kind, blob in export_qat(core).items():
            inv = inventory(blob, kind)
            assert (inv.float_ops, inv.quantize_ops) == (0, 0), (name, kind, inv.float_tensors)
            counts[name, kind] = inv.op_counts
    for kind, n in norms.items():
        a, b = counts["mul", kind], counts["matmul", kind]
        assert b["MEAN"] == a["MEAN"] - n == n  # only the means are left
        assert b["BATCH_MATMUL"] == a["BATCH_MATMUL"] + n
        assert b.get("MUL", 0) == a["MUL"] - n  # no more xc * xc


def test_layernorm_variance_must_be_listed():
    from s2s_qat.models.layers import LayerNorm
    with pytest.raises(ValueError, match="'square'.*allowed: mul, matmul"):
        LayerNorm(1e-5, "square")


def _localize_tiny(core, state, blobs):
    from s2s_qat.export import convert
    from s2s_qat.models import build_decoder_step, build_encoder
    from s2s_qat.validate.localize import localize, twin_names

    cfg = core.cfg
    ids, mask = source_batch(cfg, 4, seed=5)
    state.mode = "off"
    try:
        floats = {"encoder": convert(build_encoder(core), "float"),
                  "decoder_step": convert(build_decoder_step(core), "float")}
        memory = KerasBackend(core).encode(ids[:1], mask[:1]).numpy()
    finally:
        state.mode = "quantize"
    d_ids, d_mask = left_pad_prefix([cfg.bos_token_id, 5, 6], cfg.target_length, cfg.pad_token_id)
    enc_rows = [{"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]} for i in range(4)]
    dec_rows = [{"decoder_input_ids": d_ids, "decoder_attention_mask": d_mask, "encoder_hidden_states": memory,
                 "encoder_attention_mask": mask[:1]}]
    out = []
    for kind, rows in (("encoder", enc_rows), ("decoder_step", dec_rows)):
        out += [e.as_dict() for e in localize(floats[kind], blobs[kind], kind, rows,
                                              twins=twin_names(floats[kind], blobs[kind]))]
    return out


def test_boundary_quantizer_is_the_encoder_outputs():
    core, state = _calibrated(normalize_before=True)
    assert core.encoder_output_layer is core.enc_final_norm
    core, state = _calibrated()
    assert core.encoder_output_layer is core.encoder_blocks[-1].final_layer_norm


def test_teacher_greedy_matches_step_by_step_decoding_and_builds_training_rows():
    from harness import reference_greedy

    core = tiny_core(seed=2)
    cfg = core.cfg
    ids, mask = source_batch(cfg, 5, seed=4)
    outputs = teacher_greedy(core, ids, mask, progress=False)
    for i in range(5):
        expected = reference_greedy(core, ids[i:i + 1], mask[i:i + 1], cfg.target_length)
        got = [int(t) for t in outputs[i] if t != cfg.pad_token_id]
        assert got == expected[: len(got)] and len(got) == len(expected)

    gold = EncodedSplit(ids, mask, np.zeros_like(outputs), np.zeros_like(outputs), np.zeros_like(outputs),
                        np.zeros(outputs.shape, np.float32), 0, 0)
    rows = outputs_as_split(ids, mask, outputs, cfg.bos_token_id, cfg.pad_token_id)
    n = int(rows.label_mask[0].sum())
    assert rows.labels[0, :n].tolist() == [int(t) for t in outputs[0, :n]]
    assert rows.decoder_input_ids[0, :n].tolist() == [cfg.bos_token_id] + outputs[0, :n - 1].tolist()
    assert rows.decoder_attention_mask[0].sum() == n

    mixed = MixedPrefixSplit(gold, rows, fraction=0.5, seed=1)
    batch = mixed.batch(np.arange(5))
    for i in range(5):
        src = rows if mixed.use_teacher[i] else gold
        assert batch["labels"][i].tolist() == src.labels[i].tolist()
    assert 0 < mixed.use_teacher.sum() < 5


def test_distill_kl_and_mse_against_hand_computed_values():
    s = np.array([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]], np.float32)
    t = np.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], np.float32)
    mask = np.array([[1.0, 0.0]], np.float32)  # only the first position counts
    temp = 2.0

    def softmax(x):
        e = np.exp(x - x.max())
        return e / e.sum()

    p, q = softmax(t[0, 0] / temp), softmax(s[0, 0] / temp)
    expected = temp ** 2 * float(np.sum(p * (np.log(p) - np.log(q))))
    assert float(distill_kl(s, t, mask, temp)) == pytest.approx(expected, rel=1e-5)
    assert float(distill_kl(t, t, mask, temp)) == pytest.approx(0.0, abs=1e-6)
    # MSE over masked positions, averaged over features: position 0 only -> mean((s0 - t0)^2)
    assert float(masked_mse(s, t, mask)) == pytest.approx(float(np.mean((s[0, 0] - t[0, 0]) ** 2)), rel=1e-6)


def test_qat_recipe_section_is_validated():
    from s2s_qat.recipe import RecipeError, parse_recipe

    with pytest.raises(RecipeError,
                       match=r"qat.enabled: got true; expected true exactly when ladder.variants lists qat-int8"):
        parse_recipe({"name": "x", "qat": {"enabled": True}})
    with pytest.raises(RecipeError, match=r"qat.enabled: got false"):
        parse_recipe({"name": "x", "ladder": {"variants": ["fp32", "qat-int8"]}})
    with pytest.raises(RecipeError, match=r"qat.temperature: got 0; expected a number > 0.0"):
        parse_recipe({"name": "x", "qat": {"temperature": 0}})
    recipe = parse_recipe({"name": "x", "qat": {"enabled": True}, "ladder": {"variants": ["fp32", "qat-int8"]}})
    assert dataclasses.asdict(recipe.qat)["distill_weight"] == 0.5
