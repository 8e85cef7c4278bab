"""Resumable teacher-forced training: checkpoints, early stopping, TensorBoard, progress bar.

The loop is written once for every model that trains on teacher-forced batches (teacher now; QAT and
students later supply their own loss through `loss_fn`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras
from tqdm.auto import tqdm

from s2s_qat.atomic import fresh_temp_dir, publish_dir, write_json
from s2s_qat.models import Seq2SeqCore, teacher_forced_logits
from s2s_qat.recipe import TrainConfig
from s2s_qat.training.batches import BatchOrder, EncodedSplit
from s2s_qat.training.losses import label_smoothed_nll
from s2s_qat.training.schedule import WarmupSchedule

log = logging.getLogger("s2s_qat")
LossFn = Callable[[Seq2SeqCore, dict, bool], tf.Tensor]
EVAL_BATCH = 256


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def make_optimizer(cfg: TrainConfig) -> tf_keras.optimizers.Optimizer:
    lr = WarmupSchedule(cfg.learning_rate, cfg.warmup_steps, cfg.schedule, cfg.max_steps)
    clip = {"global_clipnorm": cfg.clip_norm} if cfg.clip_norm > 0 else {}
    if cfg.weight_decay > 0:
        return tf_keras.optimizers.AdamW(lr, weight_decay=cfg.weight_decay, beta_2=0.98, epsilon=1e-9, **clip)
    return tf_keras.optimizers.Adam(lr, beta_2=0.98, epsilon=1e-9, **clip)


def cross_entropy_loss(smoothing: float) -> LossFn:
    def loss(core: Seq2SeqCore, batch: dict, training: bool) -> tf.Tensor:
        logits = teacher_forced_logits(core, batch["input_ids"], batch["attention_mask"],
                                       batch["decoder_input_ids"], batch["decoder_attention_mask"], training=training)
        return label_smoothed_nll(logits, batch["labels"], batch["label_mask"], smoothing)[0]
    return loss


def mean_token_loss(eval_step: Callable[[dict], tf.Tensor], split: EncodedSplit) -> float:
    """A per-batch mean token loss averaged over every label token of `split` (batches of EVAL_BATCH)."""
    total, tokens = 0.0, 0.0
    for start in range(0, len(split), EVAL_BATCH):
        batch = split.batch(np.arange(start, min(start + EVAL_BATCH, len(split))))
        n = float(batch["label_mask"].sum())
        total += float(eval_step(batch)) * n
        tokens += n
    return total / max(tokens, 1.0)


@dataclass
class TrainResult:
    steps: int
    best_step: int
    best_val_loss: float
    stop_reason: str  # max_steps | early_stopping | max_minutes | interrupted
    seconds: float
    resumed_from: int


class Trainer:
    """Owns one training run in `workdir`: ckpt/ (resumable state), best/ (best validation weights), tb/."""

    def __init__(self, core: Seq2SeqCore, cfg: TrainConfig, train: EncodedSplit, valid: EncodedSplit,
                 workdir: Path, seed: int, loss_fn: LossFn, eval_loss_fn: LossFn,
                 strategy: tf.distribute.Strategy | None = None, progress: bool = True,
                 extra: tf.Module | None = None):
        """`extra`: trainable variables outside the model that the loss uses (e.g. a distillation projection);
        trained and checkpointed with the model, not part of best/ (the model's weights)."""
        self.core, self.cfg, self.train, self.valid = core, cfg, train, valid
        self.workdir, self.progress = Path(workdir), progress
        self.strategy = strategy or tf.distribute.get_strategy()
        self.order = BatchOrder(len(train), cfg.batch_size, seed)
        self.loss_fn, self.eval_loss_fn = loss_fn, eval_loss_fn
        with self.strategy.scope():
            self.optimizer = make_optimizer(cfg)
            self.variables = list(core.trainable_variables) + (list(extra.trainable_variables) if extra else [])
            self.optimizer.build(self.variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.best_val = tf.Variable(np.inf, dtype=tf.float32, trainable=False, name="best_val_loss")
            self.best_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="best_step")
            self.bad_evals = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_evals")
        tracked = {"extra": extra} if extra is not None else {}
        self.ckpt = tf.train.Checkpoint(core=core, optimizer=self.optimizer, step=self.step, best_val=self.best_val,
                                        best_step=self.best_step, bad_evals=self.bad_evals, **tracked)
        self.manager = tf.train.CheckpointManager(self.ckpt, str(self.workdir / "ckpt"), max_to_keep=cfg.keep_checkpoints)
        self.best_ckpt = tf.train.Checkpoint(core=core)
        self._train_step = tf.function(self._replica_step_all)
        self._eval_step = tf.function(lambda b: self.eval_loss_fn(self.core, b, False))

    # === State ===

    def restore(self) -> int:
        """Restore the latest checkpoint if there is one; returns the step training will continue from."""
        latest = self.manager.latest_checkpoint
        if latest:
            self.ckpt.restore(latest).assert_existing_objects_matched()
        return int(self.step.numpy())

    def save(self) -> None:
        self.manager.save(checkpoint_number=int(self.step.numpy()))

    def _save_best(self) -> None:
        tmp = fresh_temp_dir(self.workdir / "best")
        self.best_ckpt.write(str(tmp / "weights"))
        publish_dir(tmp, self.workdir / "best")

    def restore_best(self) -> None:
        best = self.workdir / "best" / "weights"
        if (self.workdir / "best").is_dir():
            self.best_ckpt.read(str(best)).assert_existing_objects_matched()

    # === Steps ===

    def _replica_step_all(self, batch):
        def replica_step(b):
            with tf.GradientTape() as tape:
                loss = self.loss_fn(self.core, b, True)
                scaled = loss / self.strategy.num_replicas_in_sync
            grads = tape.gradient(scaled, self.variables)
            self.optimizer.apply_gradients(zip(grads, self.variables))
            return loss
        per_replica = self.strategy.run(replica_step, args=(batch,))
        return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    def _distribute(self, batch: dict[str, np.ndarray]):
        n = self.strategy.num_replicas_in_sync
        if n == 1:
            return batch
        return self.strategy.experimental_distribute_values_from_function(
            lambda ctx: {k: v[ctx.replica_id_in_sync_group::n] for k, v in batch.items()})

    def validation_loss(self) -> float:
        return mean_token_loss(self._eval_step, self.valid)

    # === Loop ===

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train until max_steps, early stopping or the time budget. `stop_after` simulates an interruption
        after that many steps in total (a checkpoint is written, as on Ctrl-C)."""
        cfg = self.cfg
        start_step = self.restore()
        writer = tf.summary.create_file_writer(str(self.workdir / "tb"))
        started = time.monotonic()
        reason = "max_steps"
        bar = tqdm(total=cfg.max_steps, initial=start_step, desc="train", unit="step", disable=not self.progress,
                   dynamic_ncols=True)
        running = []
        try:
            with writer.as_default():
                while int(self.step.numpy()) < cfg.max_steps:
                    step = int(self.step.numpy())
                    if stop_after is not None and step >= stop_after:
                        reason = "interrupted"
                        self.save()
                        break
                    loss = float(self._train_step(self._distribute(self.train.batch(self.order.indices(step)))))
                    self.step.assign_add(1)
                    step += 1
                    running.append(loss)
                    bar.update(1)
                    if step % cfg.log_every == 0:
                        tf.summary.scalar("train/loss", np.mean(running), step=step)
                        tf.summary.scalar("train/learning_rate", self.optimizer.learning_rate, step=step)
                        bar.set_postfix(loss=f"{np.mean(running):.3f}", best_val=f"{float(self.best_val.numpy()):.3f}")
                        running = []
                    if step % cfg.eval_every == 0 or step == cfg.max_steps:
                        reason = self._evaluate(step, started) or reason
                    if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or reason != "max_steps":
                        self.save()
                    if reason != "max_steps":
                        break
        except KeyboardInterrupt:
            self.save()  # nothing lost: the same command resumes here
            raise
        finally:
            bar.close()
            writer.flush()
        self.restore_best()
        return TrainResult(steps=int(self.step.numpy()), best_step=int(self.best_step.numpy()),
                           best_val_loss=float(self.best_val.numpy()), stop_reason=reason,
                           seconds=time.monotonic() - started, resumed_from=start_step)

    def _evaluate(self, step: int, started: float) -> str | None:
        val = self.validation_loss()
        tf.summary.scalar("validation/loss", val, step=step)
        if val < float(self.best_val.numpy()):
            self.best_val.assign(val)
            self.best_step.assign(step)
            self.bad_evals.assign(0)
            self._save_best()
        else:
            self.bad_evals.assign_add(1)
        log.info("step %d: validation loss %.4f (best %.4f at step %d)", step, val, float(self.best_val.numpy()),
                 int(self.best_step.numpy()))
        if self.cfg.early_stopping_patience and int(self.bad_evals.numpy()) >= self.cfg.early_stopping_patience:
            return "early_stopping"
        if self.cfg.max_minutes is not None and time.monotonic() - started > 60 * self.cfg.max_minutes:
            return "max_minutes"
        return None


def save_result(result: TrainResult, path: Path) -> None:
    write_json(path, asdict(result))
