"""Export of the QAT graphs to full-INT8 TFLite, and the parity check between the QAT Keras model and that export.

The QAT graphs carry every range as a fake-quantization op, so no representative dataset is needed; the encoder
output and the decoder's `encoder_hidden_states` input use one quantizer (`Seq2SeqCore.boundary`), so both sides
of the boundary get the same (scale, zero point) and the runtime passes the int8 bytes through unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from tqdm.auto import tqdm

from s2s_qat.export import convert
from s2s_qat.models import Seq2SeqCore, build_decoder_step, build_encoder
from s2s_qat.recipe import RuntimeConfig
from s2s_qat.runtime import KerasBackend, Translator, greedy_batch, left_pad_prefix, pad_source
from s2s_qat.runtime.tflite_backend import TFLiteBackend
from s2s_qat.tokenizer import TextCodec
from s2s_qat.validate.metrics import first_step_logits, row_cosine


def export_qat(core: Seq2SeqCore) -> dict[str, bytes]:
    """{"encoder": bytes, "decoder_step": bytes}: full-INT8 flatbuffers of a QAT core's deployment graphs."""
    return {"encoder": convert(build_encoder(core), "qat"), "decoder_step": convert(build_decoder_step(core), "qat")}


@dataclass
class Parity:
    sentences: int
    mean_cosine: float
    min_cosine: float
    identical_greedy: float      # share of sentences whose greedy token sequences are identical
    first_difference: list[dict]  # up to 5 sentences that differ: source, keras, tflite
    boundary_identity: bool
    min_cosine_required: float
    min_identical_required: float

    @property
    def passed(self) -> bool:
        return (self.mean_cosine >= self.min_cosine_required and self.identical_greedy >= self.min_identical_required
                and self.boundary_identity)

    def message(self) -> str:
        return (f"QAT Keras vs TFLite on {self.sentences} test sentences: first-step logits cosine mean "
                f"{self.mean_cosine:.5f} (min {self.min_cosine:.5f}; required >= {self.min_cosine_required}), "
                f"identical greedy outputs {100 * self.identical_greedy:.1f}% (required >= "
                f"{100 * self.min_identical_required:.0f}%), boundary identity {self.boundary_identity}")

    def as_dict(self) -> dict:
        return dict(asdict(self), passed=self.passed)


PARITY_BATCH = 50  # Keras rows decoded together (the TFLite export runs one sentence at a time)


def keras_greedy_rows(keras: KerasBackend, codec: TextCodec, sources: list[str], translator: Translator,
                      batch: int = PARITY_BATCH, progress: bool = False) -> tuple[list[list[int]], np.ndarray]:
    """Greedy token sequences ([] for an empty source, as `Translator.hypothesis`) and (N, V) first-step logits
    of the Keras deployment graphs, `batch` sentences per graph call: the same graphs and host loop as
    `Translator`, an order of magnitude fewer calls."""
    s_len, t_len, pad = keras.source_length, keras.target_length, codec.pad_id
    bos_ids, bos_mask = left_pad_prefix([codec.bos_id], t_len, pad)
    tokens, first = [], []
    for start in tqdm(range(0, len(sources), batch), desc="qat parity (Keras)", unit="batch", disable=not progress,
                      dynamic_ncols=True):
        chunk = sources[start:start + batch]
        padded = [pad_source(codec.encode_source(s, s_len).ids, s_len, pad) for s in chunk]
        ids, mask = np.concatenate([p[0] for p in padded]), np.concatenate([p[1] for p in padded])
        memory = keras.encode_rows(ids, mask)
        first.append(keras.decode_step_rows(np.repeat(bos_ids, len(chunk), 0), np.repeat(bos_mask, len(chunk), 0),
                                            memory, mask))
        hyps = greedy_batch(keras.decode_step_rows, memory, mask, t_len, translator.settings)
        tokens += [list(h.tokens) if s.strip() else [] for s, h in zip(chunk, hyps)]
    return tokens, np.concatenate(first).astype(np.float64) if first else np.zeros((0, 0))


def parity_check(core: Seq2SeqCore, blobs: dict[str, bytes], codec: TextCodec, sources: list[str],
                 min_cosine: float, min_identical: float, progress: bool = True) -> Parity:
    """Greedy outputs and first-step logits of the QAT Keras graphs (fake-quantized float) against the TFLite
    export, on the same sources and the same host loop (Keras rows batched: `keras_greedy_rows`)."""
    keras = KerasBackend(core)
    tflite = TFLiteBackend(blobs["encoder"], blobs["decoder_step"])
    greedy = RuntimeConfig()
    tt = Translator.create(codec, tflite, greedy)
    keras_tokens, keras_first = keras_greedy_rows(keras, codec, sources, Translator.create(codec, keras, greedy),
                                                  progress=progress)
    cos = row_cosine(keras_first, first_step_logits(tflite, codec, sources))
    same, differ = 0, []
    for s, ta in zip(tqdm(sources, desc="qat parity (TFLite)", unit="sent", disable=not progress, dynamic_ncols=True),
                     keras_tokens):
        b = tt.hypothesis(s)
        tb = list(b.tokens) if b else []
        same += ta == tb
        if ta != tb and len(differ) < 5:
            differ.append({"source": s, "keras": codec.decode(ta), "tflite": codec.decode(tb)})
    m_out, m_in = tflite.memory_out, tflite.memory_in
    identity = bool(m_out.dtype == m_in.dtype == np.int8 and m_out.scale == m_in.scale
                    and m_out.zero_point == m_in.zero_point)
    return Parity(sentences=len(sources), mean_cosine=float(cos.mean()), min_cosine=float(cos.min()),
                  identical_greedy=same / max(len(sources), 1), first_difference=differ, boundary_identity=identity,
                  min_cosine_required=min_cosine, min_identical_required=min_identical)


def localize_qat(core: Seq2SeqCore, state, blobs: dict[str, bytes], codec: TextCodec, sources: list[str],
                 targets: list[str], prefixes: int = 2) -> list[dict]:
    """Per-tensor error of the QAT export against a float conversion of the same weights (quantizers off), on
    `sources` (decoder rows: BOS and gold prefixes, float encoder states), worst `added` first. Tensors are paired
    by aligning the two graphs' op sequences, since the QAT export names tensors after its quantizers."""
    from s2s_qat.export.calibration import generation_state_calibration
    from s2s_qat.validate.localize import localize, twin_names, worst_first

    mode = state.mode
    state.mode = "off"
    try:
        floats = {"encoder": convert(build_encoder(core), "float"),
                  "decoder_step": convert(build_decoder_step(core), "float")}
        rows = generation_state_calibration(KerasBackend(core), codec, sources, targets,
                                            [codec.pieces(t) for t in targets], prefixes)
    finally:
        state.mode = mode
    out = []
    for kind, data in (("encoder", rows.encoder), ("decoder_step", rows.decoder)):
        twins = twin_names(floats[kind], blobs[kind])
        out += [e.as_dict() for e in localize(floats[kind], blobs[kind], kind, data, twins=twins)]
    return worst_first(out)
