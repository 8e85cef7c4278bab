"""Batched decoding of a whole training split by an FP32 model: greedy (QAT's teacher prefixes) and beam search
(sequence-level distillation targets). Both run the teacher-forced graph on the prefix's own length: causal
attention makes the last slot's logits exactly the decoder step's for that prefix, so the cost grows with the
prefix, not with T, and one trace per prefix length serves every batch.

Outputs are (N, T) int32: the generated tokens, EOS included when reached, PAD after.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from s2s_qat.models import Seq2SeqCore
from s2s_qat.runtime.generate import banned_tokens

DECODE_BATCH = 256  # decoder rows per call (sources for greedy, sources x beams for beam search)


class _PrefixDecoder:
    def __init__(self, core: Seq2SeqCore):
        self.core = core
        self.encode = tf.function(lambda i, m: core.encode(i, m), reduce_retracing=True)
        # one trace per prefix length (static shapes, as in the deployment graphs)
        self.last_logits = tf.function(lambda memory, mask, dec: _last_logits(core, memory, mask, dec))


def _last_logits(core: Seq2SeqCore, memory, mask, dec):
    """(B, V) logits after the last slot of an unpadded (B, t) prefix: the teacher-forced graph's last row, with
    the output projection (V x D per slot, the largest matmul) computed for that slot only."""
    positions = tf.range(dec.shape[1])[None, :] + tf.zeros_like(dec)
    hidden = core.decode(dec, tf.ones_like(dec), positions, memory, mask)
    return core.logits(hidden[:, -1])


def teacher_greedy(core: Seq2SeqCore, input_ids: np.ndarray, attention_mask: np.ndarray,
                   progress: bool = True) -> np.ndarray:
    """(N, T) greedy outputs of `core`."""
    cfg = core.cfg
    n, t_len = len(input_ids), cfg.target_length
    out = np.full((n, t_len), cfg.pad_token_id, np.int32)
    model = _PrefixDecoder(core)
    starts = range(0, n, DECODE_BATCH)
    for start in tqdm(starts, desc="teacher prefixes", unit="batch", disable=not progress, dynamic_ncols=True):
        ids, mask = input_ids[start:start + DECODE_BATCH], attention_mask[start:start + DECODE_BATCH]
        b = len(ids)
        memory = model.encode(tf.constant(ids), tf.constant(mask))
        dec = np.full((b, t_len), cfg.pad_token_id, np.int32)
        dec[:, 0] = cfg.bos_token_id
        done = np.zeros(b, bool)
        for t in range(t_len):
            tokens = np.argmax(model.last_logits(memory, mask, dec[:, :t + 1]).numpy(), axis=-1).astype(np.int32)
            tokens[done] = cfg.pad_token_id
            out[start:start + b, t] = tokens
            if t + 1 < t_len:
                dec[:, t + 1] = tokens
            done |= tokens == cfg.eos_token_id
            if done.all():
                break
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def teacher_beam(core: Seq2SeqCore, input_ids: np.ndarray, attention_mask: np.ndarray, beam_size: int,
                 length_penalty: float = 1.0, max_new_tokens: int | None = None, no_repeat_ngram_size: int = 0,
                 progress: bool = True) -> np.ndarray:
    """(N, T) beam-search outputs of `core`, batched over sources and beams.

    The search is the host loop's (`runtime.generate.beam_search`) step for step: each live hypothesis is
    expanded by its `beam_size` best tokens, the `beam_size` best candidates by total log-probability stay live,
    candidates ending in EOS join the finished pool, a source stops once `beam_size` have finished, and the result
    is the best logprob / length**length_penalty. Only the logits are computed for many hypotheses at once.
    """
    cfg = core.cfg
    k, t_len = beam_size, cfg.target_length
    steps = min(max_new_tokens or t_len, t_len)
    n = len(input_ids)
    out = np.full((n, t_len), cfg.pad_token_id, np.int32)
    model = _PrefixDecoder(core)
    per_call = max(1, DECODE_BATCH // k)
    rows = per_call * k  # fixed row count per call: padded, so a smaller last batch does not retrace
    starts = range(0, n, per_call)
    for start in tqdm(starts, desc="teacher beam search", unit="batch", disable=not progress, dynamic_ncols=True):
        ids, mask = input_ids[start:start + per_call], attention_mask[start:start + per_call]
        b = len(ids)
        memory = model.encode(tf.constant(ids), tf.constant(mask)).numpy()
        live: list[list[tuple[tuple[int, ...], float]]] = [[((), 0.0)] for _ in range(b)]
        finished: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in range(b)]
        active = np.ones(b, bool)
        for t in range(steps):
            hyps = [(i, h) for i in range(b) if active[i] for h in live[i]]
            if not hyps:
                break
            dec = np.full((rows, t + 1), cfg.pad_token_id, np.int32)
            dec[:, 0] = cfg.bos_token_id
            src = np.zeros(rows, np.int64)
            for j, (i, (tokens, _)) in enumerate(hyps):
                dec[j, 1:] = tokens
                src[j] = i
            logp = _log_softmax(model.last_logits(memory[src], mask[src], dec).numpy()[:len(hyps)])
            for j, (i, (tokens, _)) in enumerate(hyps):
                banned = banned_tokens([cfg.bos_token_id, *tokens], no_repeat_ngram_size)
                logp[j, banned] = -np.inf
            top = np.argsort(-logp, axis=1, kind="stable")[:, :k]
            candidates: list[list[tuple[tuple[int, ...], float, bool]]] = [[] for _ in range(b)]
            for j, (i, (tokens, score)) in enumerate(hyps):
                for tok in top[j]:
                    if np.isfinite(logp[j, tok]):
                        candidates[i].append(((*tokens, int(tok)), score + float(logp[j, tok]),
                                              int(tok) == cfg.eos_token_id))
            for i in np.flatnonzero(active):
                cands = sorted(candidates[i], key=lambda c: -c[1])
                live[i] = []
                for tokens, score, done in cands:
                    if done:
                        finished[i].append((tokens, score))
                    elif len(live[i]) < k:
                        live[i].append((tokens, score))
                    if len(live[i]) == k:
                        break
                if len(finished[i]) >= k or not live[i]:
                    active[i] = False
        for i in range(b):
            pool = finished[i] or live[i]
            tokens, _ = max(pool, key=lambda h: h[1] / (max(len(h[0]), 1) ** length_penalty))
            out[start + i, :len(tokens)] = tokens
    return out
