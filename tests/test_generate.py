"""Host generation loop through the Keras backend vs straightforward reference implementations."""
import numpy as np
import pytest

from harness import TINY, reference_greedy, source_batch, tiny_core
from s2s_qat.models import teacher_forced_logits
from s2s_qat.runtime import GenerationSettings, KerasBackend, beam_search, greedy, greedy_batch, log_softmax
from s2s_qat.runtime.generate import banned_tokens


def _settings(**kw):
    base = dict(bos_id=TINY.bos_token_id, eos_id=TINY.eos_token_id, pad_id=TINY.pad_token_id,
                max_new_tokens=TINY.target_length)
    return GenerationSettings(**(base | kw))


@pytest.fixture(scope="module")
def model():
    core = tiny_core(seed=11)
    # Make EOS reachable so some hypotheses finish early.
    core.final_logits_bias.assign(core.final_logits_bias.numpy() + np.eye(TINY.vocab_size)[TINY.eos_token_id] * 4.0)
    return core, KerasBackend(core)


def _sources(n=8):
    return source_batch(TINY, n, seed=21)


def test_greedy_matches_teacher_forced_reference(model):
    core, backend = model
    ids, mask = _sources()
    finished = 0
    for i in range(len(ids)):
        hyp = greedy(backend, backend.encode(ids[i:i + 1], mask[i:i + 1]), mask[i:i + 1], _settings())
        assert list(hyp.tokens) == reference_greedy(core, ids[i:i + 1], mask[i:i + 1], TINY.target_length)
        finished += hyp.finished
    assert 0 < finished  # the EOS path is exercised


@pytest.mark.parametrize("no_repeat", [0, 2])
def test_greedy_batch_is_greedy_row_by_row(model, no_repeat):
    """The batched loop (QAT parity's Keras side) gives each row what `greedy` gives it alone: tokens, finished
    flag and log-probability, with rows finishing at different steps and n-gram bans per row."""
    _, backend = model
    ids, mask = _sources(8)
    settings = _settings(no_repeat_ngram_size=no_repeat)
    rows = greedy_batch(backend.decode_step_rows, backend.encode_rows(ids, mask), mask, TINY.target_length, settings)
    alone = [greedy(backend, backend.encode(ids[i:i + 1], mask[i:i + 1]), mask[i:i + 1], settings)
             for i in range(len(ids))]
    assert [r.tokens for r in rows] == [a.tokens for a in alone]
    assert [r.finished for r in rows] == [a.finished for a in alone]
    assert len({len(r.tokens) for r in rows}) > 2  # rows stop at different steps
    np.testing.assert_allclose([r.logprob for r in rows], [a.logprob for a in alone], rtol=1e-4, atol=1e-4)


def _sequence_logprob(core, ids, mask, tokens):
    dec = np.full((1, TINY.target_length), TINY.pad_token_id, np.int32)
    prefix = [TINY.bos_token_id, *tokens][: TINY.target_length]
    dec[0, : len(prefix)] = prefix
    dmask = (np.arange(TINY.target_length) < len(prefix)).astype(np.int32)[None]
    logits = teacher_forced_logits(core, ids, mask, dec, dmask).numpy()[0]
    return sum(log_softmax(logits[i])[t] for i, t in enumerate(tokens))


def reference_beam(core, ids, mask, k, max_new, length_penalty):
    """Plain beam search that scores every candidate with the teacher-forced graph (no decoder_step)."""
    cfg = core.cfg
    live, finished = [((), 0.0)], []
    for _ in range(min(max_new, cfg.target_length)):
        cands = []
        for toks, score in live:
            dec = np.full((1, cfg.target_length), cfg.pad_token_id, np.int32)
            prefix = [cfg.bos_token_id, *toks]
            dec[0, : len(prefix)] = prefix
            dmask = (np.arange(cfg.target_length) < len(prefix)).astype(np.int32)[None]
            logp = log_softmax(teacher_forced_logits(core, ids, mask, dec, dmask).numpy()[0, len(prefix) - 1])
            for t in np.argsort(-logp, kind="stable")[:k]:
                cands.append(((*toks, int(t)), score + float(logp[t])))
        cands.sort(key=lambda c: -c[1])
        live = []
        for toks, score in cands:
            if toks[-1] == cfg.eos_token_id:
                finished.append((toks, score))
            elif len(live) < k:
                live.append((toks, score))
            if len(live) == k:
                break
        if len(finished) >= k or not live:
            break
    pool = finished or live
    return max(pool, key=lambda c: c[1] / len(c[0]) ** length_penalty)


@pytest.mark.parametrize("k,lp", [(3, 1.0), (4, 0.0)])
def test_beam_matches_reference_beam(model, k, lp):
    core, backend = model
    ids, mask = _sources(5)
    for i in range(len(ids)):
        hyp = beam_search(backend, backend.encode(ids[i:i + 1], mask[i:i + 1]), mask[i:i + 1],
                          _settings(beam_size=k, length_penalty=lp))
        ref_tokens, ref_score = reference_beam(core, ids[i:i + 1], mask[i:i + 1], k, TINY.target_length, lp)
        assert hyp.tokens == ref_tokens
        assert hyp.logprob == pytest.approx(ref_score, abs=1e-4)
        assert hyp.logprob == pytest.approx(_sequence_logprob(core, ids[i:i + 1], mask[i:i + 1], hyp.tokens), abs=1e-4)


def test_beam_of_one_is_greedy_and_wider_beam_scores_no_worse(model):
    core, backend = model
    ids, mask = _sources(6)
    for i in range(len(ids)):
        memory = backend.encode(ids[i:i + 1], mask[i:i + 1])
        g = greedy(backend, memory, mask[i:i + 1], _settings())
        b1 = beam_search(backend, memory, mask[i:i + 1], _settings(beam_size=1, length_penalty=0.0))
        assert b1.tokens == g.tokens
        b4 = beam_search(backend, memory, mask[i:i + 1], _settings(beam_size=4, length_penalty=0.0))
        if g.finished:
            assert b4.logprob >= g.logprob - 1e-6


def test_max_new_tokens_and_no_repeat_ngram(model):
    _, backend = model
    ids, mask = _sources(3)
    for i in range(3):
        memory = backend.encode(ids[i:i + 1], mask[i:i + 1])
        assert len(greedy(backend, memory, mask[i:i + 1], _settings(max_new_tokens=2)).tokens) <= 2
        toks = [TINY.bos_token_id, *greedy(backend, memory, mask[i:i + 1], _settings(no_repeat_ngram_size=2)).tokens]
        bigrams = list(zip(toks, toks[1:]))
        assert len(bigrams) == len(set(bigrams))


def test_banned_tokens():
    assert banned_tokens([1, 5, 6, 5], 2) == [6]
    assert banned_tokens([1, 5, 6, 7], 2) == []
    assert banned_tokens([5, 6, 7, 5, 6], 3) == [7]
    assert banned_tokens([5], 2) == []
