"""Calibration sets for full-integer PTQ (DESIGN section 5).

naive             sources with the BOS-only decoder prefix: what a fused-graph exporter sees.
generation_state  N sources x K decoder prefixes taken from gold targets and from the teacher's own outputs
                  (BOS, early, middle, near-EOS), so every decoder activation range covers real decoding states.
Rows are dicts keyed by the deployment graphs' input names; decoder rows carry FP32 encoder states.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s2s_qat.atomic import write_with
from s2s_qat.runtime import Seq2SeqBackend, left_pad_prefix, pad_source
from s2s_qat.tokenizer import TextCodec

PREFIX_FRACTIONS = (0.0, 0.25, 0.5, 0.9)  # BOS only, early, middle, near-EOS


@dataclass
class CalibrationSet:
    encoder: list[dict]
    decoder: list[dict]

    def save(self, path: Path) -> None:
        """One .npz (rows stacked per input), written atomically, so child processes reuse the exact set."""
        arrays = {f"{kind}/{key}": np.stack([row[key] for row in rows])
                  for kind, rows in (("encoder", self.encoder), ("decoder", self.decoder)) for key in rows[0]}
        write_with(Path(path), lambda tmp: np.savez(tmp, **arrays))

    @classmethod
    def load(cls, path: Path) -> "CalibrationSet":
        # Each `data[key]` reads (and allocates) the whole array again, and a row is a view that keeps its array
        # alive: indexing `data[key][i]` per row held one full copy per row (12 GB for the default recipe's
        # 1,000 decoder rows, an OOM kill on the bench). Read every array once.
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        rows: dict[str, list[dict]] = {"encoder": [], "decoder": []}
        for kind in rows:
            keys = [k for k in arrays if k.startswith(kind + "/")]
            n = len(arrays[keys[0]]) if keys else 0
            rows[kind] = [{k.split("/", 1)[1]: arrays[k][i] for k in keys} for i in range(n)]
        return cls(rows["encoder"], rows["decoder"])


def _prefix_lengths(n_tokens: int, k: int) -> list[int]:
    """k prefix lengths (generated tokens after BOS) spread over BOS/early/middle/near-EOS of a sequence."""
    fractions = [PREFIX_FRACTIONS[i % len(PREFIX_FRACTIONS)] for i in range(k)]
    return [min(int(round(f * n_tokens)), n_tokens) for f in fractions]


def build_calibration(fp32: Seq2SeqBackend, codec: TextCodec, sources: list[str], prefixes: list[list[list[int]]],
                      k: int) -> CalibrationSet:
    """`prefixes[i]` holds candidate token sequences for source i (gold target pieces, teacher output pieces);
    k decoder rows per source cycle through them at the PREFIX_FRACTIONS positions."""
    enc_rows, dec_rows = [], []
    s, t = fp32.source_length, fp32.target_length
    for text, candidates in zip(sources, prefixes):
        ids, mask = pad_source(codec.encode_source(text, s).ids, s, codec.pad_id)
        enc_rows.append({"input_ids": ids, "attention_mask": mask})
        memory = np.asarray(fp32.encode(ids, mask), np.float32)
        for j, length in enumerate(_prefix_lengths(max(len(c) for c in candidates), k)):
            seq = candidates[j % len(candidates)]
            prefix = [codec.bos_id, *seq[: min(length, len(seq), t - 1)]]
            d_ids, d_mask = left_pad_prefix(prefix, t, codec.pad_id)
            dec_rows.append({"decoder_input_ids": d_ids, "decoder_attention_mask": d_mask,
                             "encoder_hidden_states": memory, "encoder_attention_mask": mask})
    return CalibrationSet(enc_rows, dec_rows)


def naive_calibration(fp32: Seq2SeqBackend, codec: TextCodec, sources: list[str]) -> CalibrationSet:
    return build_calibration(fp32, codec, sources, [[[]] for _ in sources], k=1)


def generation_state_calibration(fp32: Seq2SeqBackend, codec: TextCodec, sources: list[str], targets: list[str],
                                 teacher_outputs: list[list[int]], k: int) -> CalibrationSet:
    prefixes = [[codec.pieces(tgt) or [codec.eos_id], out or [codec.eos_id]]
                for tgt, out in zip(targets, teacher_outputs)]
    return build_calibration(fp32, codec, sources, prefixes, k)
