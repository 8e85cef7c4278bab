"""Deployment graphs: contract (names, dtypes, fixed shapes) and numerics against the training graph."""
import numpy as np
import pytest
import tensorflow as tf

from harness import (REFERENCE_VS_DEPLOYMENT_ATOL, STEP_VS_TEACHER_FORCED_ATOL, TINY, TINY_VARIANTS, source_batch,
                     tiny_core)
from s2s_qat.models import (build_decoder_step, build_encoder, build_teacher_forced, left_padded_positions,
                            teacher_forced_logits)
from s2s_qat.runtime import left_pad_prefix


def _targets(cfg, n, seed=1):
    rng = np.random.default_rng(seed)
    dec = np.full((n, cfg.target_length), cfg.pad_token_id, np.int32)
    lengths = rng.integers(1, cfg.target_length + 1, n)
    for i, length in enumerate(lengths):
        dec[i, 0] = cfg.bos_token_id
        dec[i, 1:length] = rng.integers(4, cfg.vocab_size, length - 1)
    return dec, lengths


def test_deployment_graph_contract():
    core = tiny_core()
    enc, dec = build_encoder(core), build_decoder_step(core)
    s, t, d, v = TINY.source_length, TINY.target_length, TINY.d_model, TINY.vocab_size
    assert {(i.name, tuple(i.shape), i.dtype) for i in enc.inputs} == {
        ("input_ids", (1, s), tf.int32), ("attention_mask", (1, s), tf.int32)}
    assert enc.output_names == ["encoder_hidden_states"]
    assert tuple(enc.outputs[0].shape) == (1, s, d) and enc.outputs[0].dtype == tf.float32
    assert {(i.name, tuple(i.shape), i.dtype) for i in dec.inputs} == {
        ("decoder_input_ids", (1, t), tf.int32), ("decoder_attention_mask", (1, t), tf.int32),
        ("encoder_hidden_states", (1, s, d), tf.float32), ("encoder_attention_mask", (1, s), tf.int32)}
    assert dec.output_names == ["logits"]
    assert tuple(dec.outputs[0].shape) == (1, v) and dec.outputs[0].dtype == tf.float32


def test_graphs_share_variables():
    core = tiny_core()
    graphs = [build_encoder(core), build_decoder_step(core), build_teacher_forced(core),
              build_encoder(core, reference=True)]
    ids = {id(v) for v in core.weights}
    for g in graphs:
        assert {id(v) for v in g.weights} <= ids
    table = core.embed_tokens.table
    table.assign(table + 1.0)  # a change through the core is seen by every graph
    ids_, mask = source_batch(TINY, 1)
    out = graphs[0]({"input_ids": ids_, "attention_mask": mask})["encoder_hidden_states"].numpy()
    np.testing.assert_allclose(out, core.encode(ids_, mask).numpy(), atol=1e-6)


def test_left_padded_positions():
    mask = np.array([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]], np.int32)
    np.testing.assert_array_equal(left_padded_positions(mask, 5).numpy(),
                                  [[0, 0, 0, 0, 1], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_decoder_step_matches_teacher_forced_at_every_position(variant):
    core = tiny_core(**TINY_VARIANTS[variant])
    cfg = core.cfg
    enc, step = build_encoder(core), build_decoder_step(core)
    src, src_mask = source_batch(cfg, 3)
    dec, lengths = _targets(cfg, 3)
    dec_mask = (np.arange(cfg.target_length)[None] < lengths[:, None]).astype(np.int32)
    full = teacher_forced_logits(core, src, src_mask, dec, dec_mask).numpy()
    worst = 0.0
    for i in range(3):
        memory = enc({"input_ids": src[i:i + 1], "attention_mask": src_mask[i:i + 1]})["encoder_hidden_states"]
        for pos in range(lengths[i]):
            ids, mask = left_pad_prefix(list(dec[i, : pos + 1]), cfg.target_length, cfg.pad_token_id)
            logits = step({"decoder_input_ids": ids, "decoder_attention_mask": mask, "encoder_hidden_states": memory,
                           "encoder_attention_mask": src_mask[i:i + 1]})["logits"].numpy()[0]
            worst = max(worst, float(np.abs(logits - full[i, pos]).max()))
    assert worst <= STEP_VS_TEACHER_FORCED_ATOL, worst


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_reference_graph_matches_deployment_graph(variant):
    core = tiny_core(**TINY_VARIANTS[variant])
    cfg = core.cfg
    src, src_mask = source_batch(cfg, 4, seed=3)
    dec, lengths = _targets(cfg, 4, seed=4)
    dec_mask = (np.arange(cfg.target_length)[None] < lengths[:, None]).astype(np.int32)
    a = teacher_forced_logits(core, src, src_mask, dec, dec_mask).numpy()
    b = teacher_forced_logits(core, src, src_mask, dec, dec_mask, reference=True).numpy()
    real = dec_mask.astype(bool)
    assert np.abs(a - b)[real].max() <= REFERENCE_VS_DEPLOYMENT_ATOL
    # Same through the two deployment-shaped graphs.
    enc_d, enc_r = build_encoder(core), build_encoder(core, reference=True)
    step_d, step_r = build_decoder_step(core), build_decoder_step(core, reference=True)
    ids, mask = left_pad_prefix(list(dec[0, : lengths[0]]), cfg.target_length, cfg.pad_token_id)
    outs = []
    for enc, step in ((enc_d, step_d), (enc_r, step_r)):
        memory = enc({"input_ids": src[:1], "attention_mask": src_mask[:1]})["encoder_hidden_states"]
        outs.append(step({"decoder_input_ids": ids, "decoder_attention_mask": mask, "encoder_hidden_states": memory,
                          "encoder_attention_mask": src_mask[:1]})["logits"].numpy())
    assert np.abs(outs[0] - outs[1]).max() <= REFERENCE_VS_DEPLOYMENT_ATOL




def test_deployment_graph_ops_follow_quantization_rules():
    """No CAST, SQUARED_DIFFERENCE/SQUARE, TILE, dynamic shapes or huge constants in the deployment graphs;
    the reference graph has the large mask and the standard LayerNorm."""
    core = tiny_core()
    s, t, d = TINY.source_length, TINY.target_length, TINY.d_model

    def ops(reference):
        step = build_decoder_step(core, reference=reference)
        enc = build_encoder(core, reference=reference)
        fn_e = tf.function(lambda i, m: enc({"input_ids": i, "attention_mask": m}))
        fn_d = tf.function(lambda a, b, c, e: step({"decoder_input_ids": a, "decoder_attention_mask": b,
                                                    "encoder_hidden_states": c, "encoder_attention_mask": e}))
        spec_s, spec_t = tf.TensorSpec((1, s), tf.int32), tf.TensorSpec((1, t), tf.int32)
        graphs = [fn_e.get_concrete_function(spec_s, spec_s).graph,
                  fn_d.get_concrete_function(spec_t, spec_t, tf.TensorSpec((1, s, d), tf.float32), spec_s).graph]
        types, consts = set(), []
        for g in graphs:
            for op in g.get_operations():
                types.add(op.type)
                if op.type == "Const" and op.get_attr("dtype") == tf.float32:
                    consts.append(np.abs(tf.make_ndarray(op.get_attr("value"))).max(initial=0))
        return types, max(consts)

    deploy, deploy_max = ops(False)
    forbidden = {"Cast", "SquaredDifference", "Square", "Tile", "Shape", "StridedSliceGrad"}
    assert not deploy & forbidden, deploy & forbidden
    assert deploy_max <= TINY.mask_value
    reference, reference_max = ops(True)
    assert {"Cast", "SquaredDifference"} <= reference
    assert reference_max >= 1e9


def test_mask_leak_predicts_where_the_bounded_mask_stops_acting_as_minus_infinity():
    """Sharpened attention (query and key kernels x6, scores x36) makes masked keys outscore -mask_value: the measured
    leak says so, the deployment graph then differs from the -1e9 reference graph, and the mask value it asks for
    brings the two back together."""
    import dataclasses

    from s2s_qat.models import build_core
    from s2s_qat.validate.mask import mask_leak

    core = tiny_core()
    cfg = core.cfg
    src, src_mask = source_batch(cfg, 8, seed=3)
    dec, lengths = _targets(cfg, 8, seed=4)
    dec_mask = (np.arange(cfg.target_length)[None] < lengths[:, None]).astype(np.int32)
    real = dec_mask.astype(bool)
    batches = [(src, src_mask, dec, dec_mask)]

    def reference_gap(model):
        a = teacher_forced_logits(model, src, src_mask, dec, dec_mask).numpy()
        b = teacher_forced_logits(model, src, src_mask, dec, dec_mask, reference=True).numpy()
        return float(np.abs(a - b)[real].max())

    calm = mask_leak(core, batches)
    assert calm.leak < 1e-6 and reference_gap(core) <= REFERENCE_VS_DEPLOYMENT_ATOL
    for v in core.weights:
        if "q_proj/kernel" in v.name or "k_proj/kernel" in v.name:
            v.assign(v * 6.0)
    sharp = mask_leak(core, batches)
    assert sharp.leak > 1e-2 and "attn" in sharp.layer, sharp
    assert reference_gap(core) > 1e-2
    assert f"model.mask_value >= {int(np.ceil(sharp.required_mask_value()))}" in sharp.message()
    # The same weights with the mask value the measurement asks for: the bounded mask is -inf again.
    fixed = build_core(dataclasses.replace(cfg, mask_value=float(np.ceil(sharp.required_mask_value(1e-6)))))
    fixed.set_weights(core.get_weights())
    assert mask_leak(fixed, batches).leak <= 1e-6
    assert reference_gap(fixed) <= REFERENCE_VS_DEPLOYMENT_ATOL
