"""The host generation loop (greedy and beam search), written once for every backend."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2s_qat.runtime.backend import Seq2SeqBackend, left_pad_prefix


@dataclass(frozen=True)
class GenerationSettings:
    bos_id: int
    eos_id: int
    pad_id: int
    max_new_tokens: int
    beam_size: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


@dataclass(frozen=True)
class Hypothesis:
    tokens: tuple[int, ...]  # generated tokens, EOS included when finished, BOS excluded
    logprob: float
    finished: bool


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def banned_tokens(prefix: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in `prefix` (BOS included)."""
    if n <= 0 or len(prefix) < n:
        return []
    tail = tuple(prefix[len(prefix) - n + 1:])
    return [prefix[i + n - 1] for i in range(len(prefix) - n + 1) if tuple(prefix[i:i + n - 1]) == tail]


def _max_steps(backend: Seq2SeqBackend, settings: GenerationSettings) -> int:
    # The prefix (BOS + generated) must fit T slots; the token predicted from a full prefix is the last one.
    return min(settings.max_new_tokens, backend.target_length)


def _greedy_step(backend: Seq2SeqBackend, ids, mask, memory, encoder_attention_mask, banned: list[int]
                 ) -> tuple[int, float]:
    """(token, its log-probability). A backend with `decode_step_raw` (TFLite) is argmax-ed on its raw output,
    int8 logits included (DESIGN section 4: greedy needs no dequantization); the log-probability, reported only,
    comes from the dequantized logits."""
    raw_step = getattr(backend, "decode_step_raw", None)
    if raw_step is None:
        logits = backend.decode_step(ids, mask, memory, encoder_attention_mask)
        logits[banned] = -np.inf
        token = int(np.argmax(logits))
    else:
        raw = raw_step(ids, mask, memory, encoder_attention_mask)
        scores = raw.astype(np.int32) if raw.dtype.kind == "i" else raw.astype(np.float32)
        scores[banned] = np.iinfo(np.int32).min if scores.dtype.kind == "i" else -np.inf
        token = int(np.argmax(scores))
        logits = backend.dequantize_logits(raw)
        logits[banned] = -np.inf
    return token, float(log_softmax(logits)[token])


def greedy(backend: Seq2SeqBackend, memory, encoder_attention_mask: np.ndarray,
           settings: GenerationSettings) -> Hypothesis:
    prefix = [settings.bos_id]
    logprob = 0.0
    for _ in range(_max_steps(backend, settings)):
        ids, mask = left_pad_prefix(prefix, backend.target_length, settings.pad_id)
        token, token_logprob = _greedy_step(backend, ids, mask, memory, encoder_attention_mask,
                                            banned_tokens(prefix, settings.no_repeat_ngram_size))
        logprob += token_logprob
        prefix.append(token)
        if token == settings.eos_id:
            return Hypothesis(tuple(prefix[1:]), logprob, True)
    return Hypothesis(tuple(prefix[1:]), logprob, False)


def greedy_batch(step, memory, encoder_attention_mask: np.ndarray, target_length: int,
                 settings: GenerationSettings) -> list[Hypothesis]:
    """`greedy` for B rows at once: `step(ids, mask, memory, encoder_attention_mask)` maps [B, T] left-padded
    prefixes to [B, V] float logits (a backend that runs any batch: the Keras deployment graphs). Row b's
    hypothesis is what `greedy` gives for row b (up to the float round-off of a larger batch); finished rows are
    carried along unchanged, so the loop ends when every row has its EOS or the prefix is full."""
    rows = int(encoder_attention_mask.shape[0])
    prefixes = [[settings.bos_id] for _ in range(rows)]
    logprobs, done = np.zeros(rows), np.zeros(rows, bool)
    ids = np.full((rows, target_length), settings.pad_id, np.int32)
    mask = np.zeros((rows, target_length), np.int32)
    for _ in range(min(settings.max_new_tokens, target_length)):
        for b, prefix in enumerate(prefixes):
            ids[b], mask[b] = (x[0] for x in left_pad_prefix(prefix, target_length, settings.pad_id))
        logits = np.array(step(ids, mask, memory, encoder_attention_mask), np.float32)
        for b in np.flatnonzero(~done):
            row = logits[b]
            row[banned_tokens(prefixes[b], settings.no_repeat_ngram_size)] = -np.inf
            token = int(np.argmax(row))
            logprobs[b] += float(log_softmax(row)[token])
            prefixes[b].append(token)
            done[b] = token == settings.eos_id
        if done.all():
            break
    return [Hypothesis(tuple(p[1:]), float(lp), bool(d)) for p, lp, d in zip(prefixes, logprobs, done)]


def _normalized(h: Hypothesis, length_penalty: float) -> float:
    return h.logprob / (max(len(h.tokens), 1) ** length_penalty)


def beam_search(backend: Seq2SeqBackend, memory, encoder_attention_mask: np.ndarray,
                settings: GenerationSettings) -> Hypothesis:
    """Beam search with early stopping once `beam_size` hypotheses have finished.

    Each step expands every live beam by its `beam_size` best tokens, keeps the `beam_size` best
    candidates by total log-probability; candidates ending in EOS move to the finished pool.
    The result is the finished hypothesis with the best logprob / length**length_penalty.
    """
    k = settings.beam_size
    live = [Hypothesis((), 0.0, False)]
    finished: list[Hypothesis] = []
    for _ in range(_max_steps(backend, settings)):
        candidates: list[Hypothesis] = []
        for h in live:
            prefix = [settings.bos_id, *h.tokens]
            ids, mask = left_pad_prefix(prefix, backend.target_length, settings.pad_id)
            logp = log_softmax(backend.decode_step(ids, mask, memory, encoder_attention_mask))
            for t in banned_tokens(prefix, settings.no_repeat_ngram_size):
                logp[t] = -np.inf
            for t in np.argsort(-logp, kind="stable")[:k]:
                if np.isfinite(logp[t]):
                    candidates.append(Hypothesis((*h.tokens, int(t)), h.logprob + float(logp[t]),
                                                 int(t) == settings.eos_id))
        candidates.sort(key=lambda c: -c.logprob)
        live = []
        for c in candidates:
            if c.finished:
                finished.append(c)
            elif len(live) < k:
                live.append(c)
            if len(live) == k:
                break
        if len(finished) >= k or not live:
            break
    pool = finished or live
    return max(pool, key=lambda h: _normalized(h, settings.length_penalty))


def generate(backend: Seq2SeqBackend, memory, encoder_attention_mask: np.ndarray,
             settings: GenerationSettings) -> Hypothesis:
    if settings.beam_size > 1:
        return beam_search(backend, memory, encoder_attention_mask, settings)
    return greedy(backend, memory, encoder_attention_mask, settings)
