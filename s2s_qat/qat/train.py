"""QAT training pieces: teacher-generated prefixes, the mixed batch source, and the distillation loss."""
from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from s2s_qat.models import Seq2SeqCore
from s2s_qat.models.graphs import teacher_forced_decode
from s2s_qat.recipe import QatConfig, TrainConfig
from s2s_qat.training.batches import EncodedSplit
from s2s_qat.training.losses import distill_kl, label_smoothed_nll, masked_mse

DECODE_BATCH = 256


def qat_train_config(base: TrainConfig, q: QatConfig) -> TrainConfig:
    """The Trainer settings of a QAT run: the teacher's, with the qat section's schedule and budget."""
    return dataclasses.replace(base, batch_size=q.batch_size, max_steps=q.max_steps, learning_rate=q.learning_rate,
                               warmup_steps=q.warmup_steps, schedule=q.schedule, label_smoothing=q.label_smoothing,
                               eval_every=q.eval_every, checkpoint_every=q.eval_every,
                               early_stopping_patience=q.early_stopping_patience, max_minutes=q.max_minutes)


def teacher_greedy(core: Seq2SeqCore, input_ids: np.ndarray, attention_mask: np.ndarray,
                   progress: bool = True) -> np.ndarray:
    """(N, T) greedy outputs (tokens then EOS, PAD after) of `core`, batched on the teacher-forced graph.

    Step t runs the teacher-forced decoder on the prefix's first t + 1 slots only (causal attention makes the last
    slot's logits exactly the decoder step's for that prefix), so the cost grows with the prefix, not with T.
    """
    cfg = core.cfg
    n, t_len = len(input_ids), cfg.target_length
    out = np.full((n, t_len), cfg.pad_token_id, np.int32)

    @tf.function
    def step_logits(memory, mask, dec):  # one trace per prefix length (static shapes, as in the graphs)
        return teacher_forced_decode(core, memory, mask, dec, tf.ones_like(dec))[:, -1]

    encode = tf.function(lambda i, m: core.encode(i, m), reduce_retracing=True)
    starts = range(0, n, DECODE_BATCH)
    for start in tqdm(starts, desc="teacher prefixes", unit="batch", disable=not progress, dynamic_ncols=True):
        ids, mask = input_ids[start:start + DECODE_BATCH], attention_mask[start:start + DECODE_BATCH]
        b = len(ids)
        memory = encode(tf.constant(ids), tf.constant(mask))
        dec = np.full((b, t_len), cfg.pad_token_id, np.int32)
        dec[:, 0] = cfg.bos_token_id
        done = np.zeros(b, bool)
        for t in range(t_len):
            tokens = np.argmax(step_logits(memory, mask, dec[:, :t + 1]).numpy(), axis=-1).astype(np.int32)
            tokens[done] = cfg.pad_token_id
            out[start:start + b, t] = tokens
            if t + 1 < t_len:
                dec[:, t + 1] = tokens
            done |= tokens == cfg.eos_token_id
            if done.all():
                break
    return out


def outputs_as_split(input_ids: np.ndarray, attention_mask: np.ndarray, outputs: np.ndarray, bos: int,
                     pad: int) -> EncodedSplit:
    """Training rows whose labels are `outputs` (teacher tokens + EOS) for these sources."""
    label_mask = (np.cumsum(outputs == pad, axis=1) == 0)  # real tokens up to the first PAD
    lengths = label_mask.sum(1)
    labels = np.where(label_mask, outputs, pad).astype(np.int32)
    dec = np.full_like(labels, pad)
    dec[:, 0] = bos
    dec[:, 1:] = np.where(label_mask[:, :-1], labels[:, :-1], pad)
    dec_mask = (np.arange(labels.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
    return EncodedSplit(input_ids, attention_mask, dec, dec_mask, labels,
                        label_mask.astype(np.float32), 0, 0)


class MixedPrefixSplit:
    """The training split where a fixed, seeded share of rows (among the first `len(teacher)`) is replaced by the
    teacher's own output for the same source, so QAT also sees the prefixes it meets while generating."""

    def __init__(self, gold: EncodedSplit, teacher: EncodedSplit, fraction: float, seed: int):
        self.gold, self.teacher = gold, teacher
        rng = np.random.default_rng([seed, 7])
        self.use_teacher = (rng.random(len(gold)) < fraction) & (np.arange(len(gold)) < len(teacher))

    def __len__(self) -> int:
        return len(self.gold)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        batch = self.gold.batch(idx)
        pick = self.use_teacher[idx]
        if pick.any():
            alt = self.teacher.batch(idx[pick])
            for key, value in alt.items():
                batch[key] = batch[key].copy()
                batch[key][pick] = value
        return batch


def outputs_digest(teacher_digest: str, rows: int) -> str:
    return hashlib.sha256(f"{teacher_digest}:{rows}".encode()).hexdigest()


def qat_loss(teacher: Seq2SeqCore, q: QatConfig):
    """(1 - w) * CE + w * T^2 KL(teacher || student) [+ encoder MSE] [+ cross-attention MSE], all on the same
    teacher-forced batch; the FP32 teacher runs without gradient."""
    w, temp = q.distill_weight, q.temperature
    tap = q.cross_attention_mse_weight > 0

    def run(core, batch, training):
        memory = core.encode(batch["input_ids"], batch["attention_mask"], training=training)
        taps = []
        if tap:
            for block in core.decoder_blocks:
                object.__setattr__(block, "taps", taps)
        try:
            logits = teacher_forced_decode(core, memory, batch["attention_mask"], batch["decoder_input_ids"],
                                           batch["decoder_attention_mask"], training=training)
        finally:
            for block in core.decoder_blocks:
                object.__setattr__(block, "taps", None)
        return memory, logits, taps

    def loss(core: Seq2SeqCore, batch: dict, training: bool) -> tf.Tensor:
        mem_s, logits_s, taps_s = run(core, batch, training)
        mem_t, logits_t, taps_t = run(teacher, batch, False)
        mem_t, logits_t = tf.stop_gradient(mem_t), tf.stop_gradient(logits_t)
        total = (1.0 - w) * label_smoothed_nll(logits_s, batch["labels"], batch["label_mask"], q.label_smoothing)[0]
        if w > 0:
            total += w * distill_kl(logits_s, logits_t, batch["label_mask"], temp)
        if q.encoder_mse_weight > 0:
            total += q.encoder_mse_weight * masked_mse(mem_s, mem_t, batch["attention_mask"])
        if tap:
            per_layer = [masked_mse(a, tf.stop_gradient(b), batch["decoder_attention_mask"])
                         for a, b in zip(taps_s, taps_t)]
            total += q.cross_attention_mse_weight * tf.add_n(per_layer) / len(per_layer)
        return total

    return loss
