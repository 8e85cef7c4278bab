"""Subword tokenizer: trained with Hugging Face `tokenizers`, used through transformers.

Special tokens (fixed ids): <pad>=0, <s>=1 (BOS, decoder start), </s>=2 (EOS), <unk>=3.
Sources are encoded as `pieces + EOS`; targets as `pieces + EOS` (labels) and `BOS + pieces`
(decoder input). Over-length inputs are truncated (EOS kept) and counted.
"""
from __future__ import annotations

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


class TextCodec:
    """Fixed-length encoding for the deployment graphs on top of a transformers tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerFast):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id, self.bos_id, self.eos_id, self.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    @classmethod
    def load(cls, path: str | Path) -> "TextCodec":
        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"tokenizer file {str(file)!r} does not exist")
        tok = PreTrainedTokenizerFast(tokenizer_file=str(file), pad_token=PAD, bos_token=BOS,
                                      eos_token=EOS, unk_token=UNK)
        return cls(tok)

    def pieces(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def encode_source(self, text: str, length: int) -> Encoded:
        """`pieces + EOS`, at most `length` ids (truncation keeps the EOS)."""
        ids = self.pieces(text)
        truncated = len(ids) + 1 > length
        return Encoded(ids[: length - 1] + [self.eos_id], truncated)

    def encode_target(self, text: str, length: int) -> Encoded:
        """Labels `pieces + EOS` of at most `length` ids; decoder input is BOS + labels[:-1]."""
        return self.encode_source(text, length)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (self.pad_id, self.bos_id, self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip()


def save_tokenizer(tok: Tokenizer, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
