"""Batched decoding of a whole training split by an FP32 model: greedy (QAT's teacher prefixes) and beam search
(sequence-level distillation targets), on a key/value cache.

The encoder runs once per batch; each decoder layer's cross-attention keys and values are projected once from
the memory, and its self-attention keys and values are kept in a (rows, heads, T, Dh) cache that step t fills at
slot t, so a step costs one token's work, not the prefix's. The step is the teacher-forced graph's row t (the same
layer calls; exactly the causal softmax, because unfilled slots get a -1e9 bias, whose exp is 0 in float32),
traced once for every step and batch. Beam search reorders the cache rows by each hypothesis' parent.

Outputs are (N, T) int32: the generated tokens, EOS included when reached, PAD after.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from s2s_qat.models import Seq2SeqCore
from s2s_qat.models.layers import mask_bias
from s2s_qat.runtime.generate import banned_tokens

DECODE_BATCH = 256  # decoder rows per call (sources for greedy, sources x beams for beam search)


_UNFILLED = -1e9  # bias of cache slots not yet written (host decoding only; the deployment graphs keep mask_value)


class _CachedDecoder:
    """One decoder step at a time against per-layer key/value caches (FP32 host decoding, no deployment graph)."""

    def __init__(self, core: Seq2SeqCore):
        self.core = core
        self.cfg = core.cfg
        self.encode = tf.function(self._encode, reduce_retracing=True)
        self.step = tf.function(self._step, reduce_retracing=True)

    def _encode(self, ids, mask):
        """Sources -> (per-layer cross-attention keys/values, cross bias), each (B, ...)."""
        core = self.core
        memory = core.encode(ids, mask)
        cross = [block.cross_attn.keys_values(memory) for block in core.decoder_blocks]
        return cross, mask_bias(mask, self.cfg.mask_value, False)

    def empty_cache(self, rows: int):
        cfg = self.cfg
        heads = cfg.attention_heads
        shape = (rows, heads, cfg.target_length, cfg.d_model // heads)
        return [(tf.zeros(shape), tf.zeros(shape)) for _ in range(cfg.decoder_layers)]

    def _step(self, tokens, t, parent, cache, source, cross, cross_bias):
        """tokens (R,) at slot t (scalar int32); row r continues cache row parent[r] (per layer (k, v), (R,H,T,Dh),
        slots < t filled) and attends to source[r] of the encoded batch (cross: per layer (k, v) (B,H,S,Dh);
        cross_bias (B,S)). -> (R, V) logits, the reordered cache with slot t filled."""
        core, cfg = self.core, self.cfg
        cache = [(tf.gather(k, parent), tf.gather(v, parent)) for k, v in cache]
        cross = [(tf.gather(k, source), tf.gather(v, source)) for k, v in cross]
        cross_bias = tf.gather(cross_bias, source)
        rows = tf.shape(tokens)[0]
        positions = tf.fill([rows, 1], t)
        x = core._embed(tokens[:, None], positions, core.dec_positions, core.dec_layernorm_embedding, False, False)
        slot = tf.one_hot(t, cfg.target_length)[None, None, :, None]  # (1,1,T,1)
        self_bias = tf.where(tf.range(cfg.target_length) <= t, 0.0, _UNFILLED)[None, :] + tf.zeros([rows, 1])
        new_cache = []
        for block, (k_cache, v_cache), (k_cross, v_cross) in zip(core.decoder_blocks, cache, cross):
            def self_attention(h, block=block, k_cache=k_cache, v_cache=v_cache):
                k_new, v_new = block.self_attn.keys_values(h)  # (R,H,1,Dh)
                k, v = k_cache + slot * k_new, v_cache + slot * v_new
                new_cache.append((k, v))
                return block.self_attn.attend(block.self_attn.queries(h), k, v, self_bias)

            x = block._sublayer(x, block.self_attn_layer_norm, self_attention, False, False, "self_attn")
            x = block._sublayer(x, block.cross_attn_layer_norm,
                                lambda h, block=block, k=k_cross, v=v_cross: block.cross_attn.attend(
                                    block.cross_attn.queries(h), k, v, cross_bias),
                                False, False, "encoder_attn")
            x = block._sublayer(x, block.final_layer_norm, lambda h, block=block: block.ffn(h), False, False, "ffn")
        if core.dec_final_norm is not None:
            x = core.dec_final_norm(x)
        return core.logits(x[:, 0]), new_cache


def teacher_greedy(core: Seq2SeqCore, input_ids: np.ndarray, attention_mask: np.ndarray,
                   progress: bool = True) -> np.ndarray:
    """(N, T) greedy outputs of `core`."""
    cfg = core.cfg
    n, t_len = len(input_ids), cfg.target_length
    out = np.full((n, t_len), cfg.pad_token_id, np.int32)
    model = _CachedDecoder(core)
    starts = range(0, n, DECODE_BATCH)
    for start in tqdm(starts, desc="teacher prefixes", unit="batch", disable=not progress, dynamic_ncols=True):
        ids, mask = input_ids[start:start + DECODE_BATCH], attention_mask[start:start + DECODE_BATCH]
        b = len(ids)
        cross, cross_bias = model.encode(tf.constant(ids), tf.constant(mask))
        cache = model.empty_cache(b)
        rows = tf.range(b)
        tokens = np.full(b, cfg.bos_token_id, np.int32)
        done = np.zeros(b, bool)
        for t in range(t_len):
            logits, cache = model.step(tf.constant(tokens), tf.constant(t, tf.int32), rows, cache, rows, cross,
                                       cross_bias)
            tokens = np.argmax(logits.numpy(), axis=-1).astype(np.int32)
            tokens[done] = cfg.pad_token_id
            out[start:start + b, t] = tokens
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
    model = _CachedDecoder(core)
    per_call = max(1, DECODE_BATCH // k)
    rows = per_call * k  # fixed row count per call: padded, so a smaller last batch does not retrace
    starts = range(0, n, per_call)
    for start in tqdm(starts, desc="teacher beam search", unit="batch", disable=not progress, dynamic_ncols=True):
        ids = np.zeros((per_call, input_ids.shape[1]), np.int32)
        mask = np.zeros_like(ids)
        b = min(per_call, n - start)
        ids[:b], mask[:b] = input_ids[start:start + b], attention_mask[start:start + b]
        cross, cross_bias = model.encode(tf.constant(ids), tf.constant(mask))
        cache = model.empty_cache(rows)
        # a hypothesis: (tokens, total log-probability, the cache row holding its prefix)
        live: list[list[tuple[tuple[int, ...], float, int]]] = [[((), 0.0, 0)] for _ in range(b)]
        finished: list[list[tuple[tuple[int, ...], float]]] = [[] for _ in range(b)]
        active = np.ones(b, bool)
        for t in range(steps):
            hyps = [(i, h) for i in range(b) if active[i] for h in live[i]]
            if not hyps:
                break
            tokens = np.full(rows, cfg.pad_token_id, np.int32)
            parent = np.zeros(rows, np.int32)
            source = np.zeros(rows, np.int32)
            for j, (i, (prefix, _, row)) in enumerate(hyps):
                tokens[j] = prefix[-1] if prefix else cfg.bos_token_id
                parent[j], source[j] = row, i
            logits, cache = model.step(tf.constant(tokens), tf.constant(t, tf.int32), tf.constant(parent), cache,
                                       tf.constant(source), cross, cross_bias)
            logp = _log_softmax(logits.numpy()[:len(hyps)])
            for j, (i, (prefix, _, _)) in enumerate(hyps):
                banned = banned_tokens([cfg.bos_token_id, *prefix], no_repeat_ngram_size)
                logp[j, banned] = -np.inf
            top = np.argsort(-logp, axis=1, kind="stable")[:, :k]
            candidates: list[list[tuple[tuple[int, ...], float, bool, int]]] = [[] for _ in range(b)]
            for j, (i, (prefix, score, _)) in enumerate(hyps):
                for tok in top[j]:
                    if np.isfinite(logp[j, tok]):
                        candidates[i].append(((*prefix, int(tok)), score + float(logp[j, tok]),
                                              int(tok) == cfg.eos_token_id, j))
            for i in np.flatnonzero(active):
                cands = sorted(candidates[i], key=lambda c: -c[1])
                live[i] = []
                for prefix, score, done, row in cands:
                    if done:
                        finished[i].append((prefix, score))
                    elif len(live[i]) < k:
                        live[i].append((prefix, score, row))
                    if len(live[i]) == k:
                        break
                if len(finished[i]) >= k or not live[i]:
                    active[i] = False
        for i in range(b):
            pool = finished[i] or [(prefix, score) for prefix, score, _ in live[i]]
            tokens, _ = max(pool, key=lambda h: h[1] / (max(len(h[0]), 1) ** length_penalty))
            out[start + i, :len(tokens)] = tokens
    return out
