"""Teacher training: loss goes down, and an interrupted run resumes at the same step with the saved weights."""
import dataclasses

import numpy as np
import tensorflow as tf

from harness import TINY, tiny_core
from s2s_qat.recipe import TrainConfig
from s2s_qat.training import BatchOrder, EncodedSplit, Trainer, cross_entropy_loss, label_smoothed_nll


def _copy_task(n: int, seed: int) -> EncodedSplit:
    """Target = source pieces (a copy task the tiny model can learn)."""
    rng = np.random.default_rng(seed)
    s, t = TINY.source_length, TINY.target_length
    src = np.zeros((n, s), np.int32)
    lab = np.zeros((n, t), np.int32)
    dec = np.zeros((n, t), np.int32)
    for i in range(n):
        k = int(rng.integers(2, t))
        body = rng.integers(4, TINY.vocab_size, k - 1)
        src[i, : k - 1], src[i, k - 1] = body, 2
        lab[i, : k - 1], lab[i, k - 1] = body, 2
        dec[i, 0], dec[i, 1:k] = 1, body
    return EncodedSplit(src, (src != 0).astype(np.int32), dec, (lab != 0).astype(np.int32), lab,
                        (lab != 0).astype(np.float32), 0, 0)


CFG = TrainConfig(batch_size=16, max_steps=40, learning_rate=3e-3, warmup_steps=5, eval_every=10,
                  checkpoint_every=10, early_stopping_patience=0, log_every=5)


def _trainer(core, workdir, cfg=CFG):
    return Trainer(core, cfg, _copy_task(256, 0), _copy_task(64, 1), workdir, seed=3,
                   loss_fn=cross_entropy_loss(0.1), eval_loss_fn=cross_entropy_loss(0.0), progress=False)


def test_label_smoothed_nll_by_hand():
    logits = tf.constant([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]]])
    labels = tf.constant([[0, 2]])
    mask = tf.constant([[1.0, 0.0]])
    logp = tf.nn.log_softmax(logits).numpy()[0, 0]
    expected = 0.9 * -logp[0] + 0.1 * -logp.mean()
    loss, tokens = label_smoothed_nll(logits, labels, mask, 0.1)
    assert float(tokens) == 1.0
    assert float(loss) == np.float32(expected) or abs(float(loss) - expected) < 1e-6


def test_batch_order_is_a_function_of_step():
    a, b = BatchOrder(100, 16, 5), BatchOrder(100, 16, 5)
    seq = [a.indices(s).tolist() for s in range(20)]
    assert [b.indices(s).tolist() for s in (13, 2, 19)] == [seq[13], seq[2], seq[19]]
    epoch0 = np.concatenate(seq[:6])
    assert len(set(epoch0.tolist())) == 96


def test_training_reduces_validation_loss(tmp_path):
    core = tiny_core(seed=1)
    trainer = _trainer(core, tmp_path)
    before = trainer.validation_loss()
    result = trainer.run()
    assert result.steps == 40 and result.stop_reason == "max_steps"
    assert result.best_val_loss < 0.85 * before


def test_resume_after_interruption_continues_at_step_n_with_saved_weights(tmp_path):
    core = tiny_core(seed=2)
    first = _trainer(core, tmp_path)
    result = first.run(stop_after=20)
    assert result.stop_reason == "interrupted" and result.steps == 20
    saved = {v.name: v.numpy() for v in core.weights}
    saved_opt = [v.numpy() for v in first.optimizer.variables]

    fresh = tiny_core(seed=99)  # a new process: different initial weights
    assert any(not np.array_equal(v.numpy(), saved[v.name]) for v in fresh.weights)
    second = _trainer(fresh, tmp_path)
    assert second.restore() == 20
    for v in fresh.weights:
        np.testing.assert_array_equal(v.numpy(), saved[v.name])
    for a, b in zip(second.optimizer.variables, saved_opt):
        np.testing.assert_array_equal(a.numpy(), b)

    # Continuing gives the same result as an uninterrupted run (same batches, same optimizer state).
    resumed = second.run()
    assert resumed.resumed_from == 20 and resumed.steps == 40
    straight_core = tiny_core(seed=2)
    straight = _trainer(straight_core, tmp_path / "straight").run()
    assert abs(resumed.best_val_loss - straight.best_val_loss) < 1e-3


def test_early_stopping(tmp_path):
    core = tiny_core(seed=4)
    cfg = dataclasses.replace(CFG, learning_rate=1e-9, warmup_steps=0, max_steps=200, early_stopping_patience=2)
    result = _trainer(core, tmp_path, cfg).run()
    assert result.stop_reason == "early_stopping"
    assert result.steps < 200


def test_mirrored_strategy_trains(tmp_path):
    """The same loop under tf.distribute.MirroredStrategy (one CPU replica here)."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        core = tiny_core(seed=5)
    trainer = Trainer(core, dataclasses.replace(CFG, max_steps=20), _copy_task(256, 0), _copy_task(64, 1), tmp_path,
                      seed=3, loss_fn=cross_entropy_loss(0.1), eval_loss_fn=cross_entropy_loss(0.0),
                      strategy=strategy, progress=False)
    before = trainer.validation_loss()
    result = trainer.run()
    assert result.steps == 20 and result.best_val_loss < 0.95 * before
