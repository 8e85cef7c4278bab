"""Fixed-length arrays for teacher-forced training, and deterministic, resumable batch order."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s2s_qat.tokenizer import TextCodec


@dataclass
class EncodedSplit:
    input_ids: np.ndarray               # (N, S) int32, right-padded
    attention_mask: np.ndarray          # (N, S) int32
    decoder_input_ids: np.ndarray       # (N, T) int32, BOS + labels[:-1], right-padded
    decoder_attention_mask: np.ndarray  # (N, T) int32
    labels: np.ndarray                  # (N, T) int32, pieces + EOS, PAD where label_mask is 0
    label_mask: np.ndarray              # (N, T) float32
    truncated_sources: int
    truncated_targets: int

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[idx] for name in
                ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "labels", "label_mask")}


def encode_split(codec: TextCodec, sources: list[str], targets: list[str], source_length: int,
                 target_length: int) -> EncodedSplit:
    n = len(sources)
    src = np.full((n, source_length), codec.pad_id, np.int32)
    dec = np.full((n, target_length), codec.pad_id, np.int32)
    lab = np.full((n, target_length), codec.pad_id, np.int32)
    trunc_s = trunc_t = 0
    for i, (s, t) in enumerate(zip(sources, targets)):
        es = codec.encode_source(s, source_length)
        et = codec.encode_target(t, target_length)
        trunc_s += es.truncated
        trunc_t += et.truncated
        src[i, : len(es.ids)] = es.ids
        lab[i, : len(et.ids)] = et.ids
        dec[i, 0] = codec.bos_id
        dec[i, 1: len(et.ids)] = et.ids[:-1]
    src_mask = (np.arange(source_length)[None, :] < (src != codec.pad_id).sum(1, keepdims=True)).astype(np.int32)
    n_lab = (lab != codec.pad_id).sum(1, keepdims=True)
    lab_mask = (np.arange(target_length)[None, :] < n_lab)
    return EncodedSplit(src, src_mask, dec, lab_mask.astype(np.int32), lab, lab_mask.astype(np.float32),
                        int(trunc_s), int(trunc_t))


class BatchOrder:
    """Batch `step` of a run is a pure function of (seed, step): resuming at step N replays the same data."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ValueError(f"training split has {n} rows, fewer than train.batch_size ({batch_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm[pos * self.batch_size:(pos + 1) * self.batch_size]
