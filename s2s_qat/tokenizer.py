"""Subword tokenizers, used through transformers: trained with Hugging Face `tokenizers`, or an imported
checkpoint's own (Marian's SentencePiece, BART's byte-level BPE).

Trained tokenizers have fixed special ids: <pad>=0, <s>=1 (BOS, decoder start), </s>=2 (EOS), <unk>=3; sources are
encoded as `pieces + EOS`, targets as `pieces + EOS` (labels) and `BOS + pieces` (decoder input).
A checkpoint's tokenizer (a directory with `codec.json`) adds its own special tokens (Marian: `pieces </s>`, BART:
`<s> pieces </s>`) and the decoder starts from the checkpoint's `decoder_start_token_id` (Marian: the pad token,
BART: `</s>`). Over-length inputs are truncated (EOS kept) and counted.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from s2s_qat.recipe import TokenizerConfig

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# Every printable ASCII character plus common written-form symbols is in the vocabulary even when the
# training text lacks it, so ordinary unseen text never turns into <unk>.
BASE_ALPHABET = [chr(c) for c in range(33, 127)] + list("£€¥°′″▁")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def train_tokenizer(cfg: TokenizerConfig, texts: Iterable[str]) -> Tokenizer:
    """Train a shared source/target subword vocabulary."""
    if cfg.type == "unigram":
        model = models.Unigram()
        trainer = trainers.UnigramTrainer(vocab_size=cfg.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                          unk_token=UNK, initial_alphabet=BASE_ALPHABET, show_progress=False)
    else:
        model = models.BPE(unk_token=UNK)
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      min_frequency=cfg.min_frequency, initial_alphabet=BASE_ALPHABET,
                                      show_progress=False)
    tok = Tokenizer(model)
    norms = [normalizers.NFKC()] + ([normalizers.Lowercase()] if cfg.lowercase else [])
    tok.normalizer = normalizers.Sequence(norms)
    pre = [pre_tokenizers.Metaspace()]
    if cfg.split_digits:
        pre.append(pre_tokenizers.Digits(individual_digits=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer=trainer)
    for i, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != i:
            raise RuntimeError(f"tokenizer training put {token} at id {tok.token_to_id(token)}, expected {i}")
    return tok


@dataclass
class Encoded:
    ids: list[int]
    truncated: bool


CODEC_FILE = "codec.json"  # marks a checkpoint's tokenizer directory: its special ids and decoder start


class TextCodec:
    """Fixed-length encoding for the deployment graphs on top of a transformers tokenizer.

    `own_specials`: the tokenizer adds the special tokens its checkpoint was trained with (imported tokenizers);
    otherwise sources and labels are `pieces + EOS`. `bos_id` is the decoder start token."""

    def __init__(self, tokenizer, pad_id: int = PAD_ID, bos_id: int = BOS_ID, eos_id: int = EOS_ID,
                 unk_id: int | None = UNK_ID, own_specials: bool = False):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = pad_id, bos_id, eos_id, unk_id
        self.own_specials = own_specials

    @classmethod
    def load(cls, path: str | Path) -> "TextCodec":
        path = Path(path)
        if path.is_dir() and (path / CODEC_FILE).is_file():
            from transformers import AutoTokenizer

            ids = json.loads((path / CODEC_FILE).read_text())
            tok = AutoTokenizer.from_pretrained(str(path))
            return cls(tok, ids["pad_id"], ids["bos_id"], ids["eos_id"], ids.get("unk_id"), own_specials=True)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"tokenizer file {str(file)!r} does not exist")
        tok = PreTrainedTokenizerFast(tokenizer_file=str(file), pad_token=PAD, bos_token=BOS,
                                      eos_token=EOS, unk_token=UNK)
        return cls(tok)

    def pieces(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _fit(self, ids: list[int], length: int) -> Encoded:
        """At most `length` ids, the final EOS kept."""
        if len(ids) <= length:
            return Encoded(ids, False)
        return Encoded(ids[: length - 1] + [self.eos_id], True)

    def encode_source(self, text: str, length: int) -> Encoded:
        """`pieces + EOS` (or the checkpoint tokenizer's own form), at most `length` ids."""
        if self.own_specials:
            return self._fit(self.tokenizer(text)["input_ids"], length)
        return self._fit(self.pieces(text) + [self.eos_id], length)

    def encode_target(self, text: str, length: int) -> Encoded:
        """Labels `pieces + EOS` (or the checkpoint tokenizer's target form) of at most `length` ids; the decoder
        input is BOS (the decoder start) + labels[:-1]."""
        if self.own_specials:
            return self._fit(self.tokenizer(text_target=text)["input_ids"], length)
        return self._fit(self.pieces(text) + [self.eos_id], length)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


def save_checkpoint_tokenizer(tokenizer, directory: Path, pad_id: int, decoder_start_id: int, eos_id: int) -> None:
    """An imported checkpoint's tokenizer (its own files) plus codec.json with the ids the model uses."""
    from s2s_qat.atomic import fresh_temp_dir, publish_dir, write_json

    tmp = fresh_temp_dir(Path(directory))
    tokenizer.save_pretrained(str(tmp))
    write_json(tmp / CODEC_FILE, {"pad_id": pad_id, "bos_id": decoder_start_id, "eos_id": eos_id,
                                  "unk_id": tokenizer.unk_token_id})
    publish_dir(tmp, Path(directory))


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
