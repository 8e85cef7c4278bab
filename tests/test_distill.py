"""Distillation pieces on tiny models: the student's config, the batched beam search that makes the sequence-level
targets, the combined distillation loss with its learned projection, and the recipe section's validation."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from harness import STEP_VS_TEACHER_FORCED_ATOL, TINY_VARIANTS, source_batch, tiny_core
from s2s_qat.distill import HiddenProjection, student_config
from s2s_qat.models import teacher_forced_logits
from s2s_qat.recipe import RecipeError, StudentModel, parse_recipe
from s2s_qat.runtime import GenerationSettings, KerasBackend, beam_search
from s2s_qat.training.decode import _CachedDecoder, teacher_beam, teacher_greedy
from s2s_qat.training.kd import kd_loss
from s2s_qat.training.losses import distill_kl, label_smoothed_nll, masked_mse


def test_student_config_takes_the_architecture_from_the_recipe_and_the_rest_from_the_teacher():
    teacher = tiny_core().cfg
    st = StudentModel(d_model=8, encoder_layers=1, decoder_layers=1, attention_heads=2, ffn_dim=16,
                      activation="gelu", normalize_before=True, tie_word_embeddings=False)
    cfg = student_config(teacher, st)
    assert (cfg.d_model, cfg.encoder_layers, cfg.ffn_dim, cfg.activation, cfg.normalize_before) == (8, 1, 16, "gelu", True)
    for key in ("vocab_size", "source_length", "target_length", "pad_token_id", "bos_token_id", "eos_token_id",
                "mask_value", "layer_norm_eps", "final_logits_bias", "max_position_embeddings"):
        assert getattr(cfg, key) == getattr(teacher, key), key


def _eos_prone_core(seed: int):
    """A random tiny model whose EOS logit is raised, so hypotheses finish at different steps."""
    core = tiny_core(seed=seed)
    bias = core.final_logits_bias.numpy()
    bias[core.cfg.eos_token_id] += 2.5
    bias[core.cfg.pad_token_id] -= 20.0  # never generated, as in a trained model (PAD fills the output rows)
    core.final_logits_bias.assign(bias)
    return core


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
def test_cached_decoder_step_is_the_teacher_forced_row_and_follows_reordered_rows(variant):
    core = tiny_core(seed=3, **TINY_VARIANTS[variant])
    cfg = core.cfg
    ids, mask = source_batch(cfg, 4, seed=2)
    rng = np.random.default_rng(0)
    dec = rng.integers(4, cfg.vocab_size, (4, cfg.target_length)).astype(np.int32)
    dec[:, 0] = cfg.bos_token_id
    expected = teacher_forced_logits(core, ids, mask, dec, np.ones_like(dec)).numpy()
    model = _CachedDecoder(core)
    cross, cross_bias = model.encode(tf.constant(ids), tf.constant(mask))
    cache = model.empty_cache(4)
    # rows are permuted every step (as beam search reorders hypotheses): row r continues row parent[r]
    order = np.arange(4)
    for t in range(cfg.target_length):
        parent = rng.permutation(4).astype(np.int32)
        order = order[parent]
        logits, cache = model.step(tf.constant(dec[order, t]), tf.constant(t), tf.constant(parent), cache,
                                   tf.constant(order.astype(np.int32)), cross, cross_bias)
        np.testing.assert_allclose(logits.numpy(), expected[order, t], atol=STEP_VS_TEACHER_FORCED_ATOL)


@pytest.mark.parametrize("beam,length_penalty,no_repeat", [(3, 1.0, 0), (4, 0.6, 2)])
def test_batched_beam_search_equals_the_host_beam_search(beam, length_penalty, no_repeat):
    core = _eos_prone_core(seed=11)
    cfg = core.cfg
    ids, mask = source_batch(cfg, 12, seed=4)
    batched = teacher_beam(core, ids, mask, beam, length_penalty, None, no_repeat, progress=False)
    keras = KerasBackend(core)
    settings = GenerationSettings(bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id,
                                  max_new_tokens=cfg.target_length, beam_size=beam, length_penalty=length_penalty,
                                  no_repeat_ngram_size=no_repeat)
    lengths = set()
    for i in range(len(ids)):
        host = beam_search(keras, keras.encode(ids[i:i + 1], mask[i:i + 1]), mask[i:i + 1], settings)
        row = [int(t) for t in batched[i] if t != cfg.pad_token_id]
        assert row == list(host.tokens), i
        lengths.add(len(row))
    assert len(lengths) >= 3  # finished at different steps: the finished pool and the stopping rule are exercised
    assert (batched != teacher_greedy(core, ids, mask, progress=False)).any()  # the beam is not greedy


def test_distillation_loss_is_the_weighted_sum_of_its_terms_and_trains_the_projection():
    teacher = tiny_core(seed=1)
    student = tiny_core(seed=2, d_model=8, ffn_dim=16)
    cfg = teacher.cfg
    ids, mask = source_batch(cfg, 4, seed=1)
    dec = np.full((4, cfg.target_length), cfg.pad_token_id, np.int32)
    dec[:, 0] = cfg.bos_token_id
    dec[:, 1:4] = np.arange(5, 8)
    dmask = (dec != cfg.pad_token_id).astype(np.int32)
    labels = np.roll(dec, -1, axis=1)
    labels[:, 3] = cfg.eos_token_id
    batch = {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": dec, "decoder_attention_mask": dmask,
             "labels": labels, "label_mask": dmask.astype(np.float32)}
    projection = HiddenProjection(8, cfg.d_model)
    assert len(projection.trainable_variables) == 2 and not HiddenProjection(16, 16).trainable_variables
    w, temp, h, smooth = 0.3, 2.0, 0.7, 0.1
    loss = kd_loss(teacher, word_weight=w, temperature=temp, label_smoothing=smooth, encoder_mse_weight=h,
                   projection=projection)
    with tf.GradientTape() as tape:
        value = loss(student, batch, False)
    s_logits = teacher_forced_logits(student, ids, mask, dec, dmask)
    t_logits = teacher_forced_logits(teacher, ids, mask, dec, dmask)
    expected = ((1 - w) * label_smoothed_nll(s_logits, labels, batch["label_mask"], smooth)[0]
                + w * distill_kl(s_logits, t_logits, batch["label_mask"], temp)
                + h * masked_mse(projection(student.encode(ids, mask)), teacher.encode(ids, mask), mask))
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    grads = tape.gradient(value, projection.trainable_variables)
    assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)


def _recipe(**distill):
    return {"name": "x", "distill": {"enabled": True, **distill},
            "ladder": {"variants": ["fp32", "student-fp32", "student-qat-int8"]}}


def test_distill_recipe_section_is_validated():
    recipe = parse_recipe(_recipe(student={"d_model": 64, "attention_heads": 2}))
    assert recipe.distill.student.d_model == 64 and dataclasses.asdict(recipe.distill)["beam_size"] == 4
    cases = [
        (_recipe(student={"d_model": 64, "attention_heads": 3}),
         r"distill.student.attention_heads: got 3; expected a divisor of distill.student.d_model \(64\)"),
        (_recipe(student={"layers": 2}), r"distill.student.layers: unknown key; allowed keys: activation, "),
        (_recipe(student={"activation": "tanh"}), r"distill.student.activation: got \"tanh\"; expected one of"),
        (_recipe(student={"d_model": 33, "attention_heads": 1}), r"distill.student.d_model: got 33; expected an even"),
        (_recipe(word_weight=1.5), r"distill.word_weight: got 1.5; expected a number >= 0.0 and <= 1.0"),
        (_recipe(beam_size=0), r"distill.beam_size: got 0; expected an integer >= 1"),
        (_recipe(train={"max_steps": 0}), r"distill.train.max_steps: got 0"),
        ({"name": "x", "distill": {"enabled": True}},
         r"distill.enabled: got true; expected true exactly when ladder.variants lists student-fp32"),
        ({"name": "x", "ladder": {"variants": ["fp32", "student-qat-int8"]}},
         r"ladder.variants: got student-qat-int8; expected no student variant while distill.enabled is false"),
        ({"name": "x", "ladder": {"variants": ["fp32", "student-fp32"]}}, r"distill.enabled: got false"),
    ]
    for raw, message in cases:
        with pytest.raises(RecipeError, match=message):
            parse_recipe(raw)
