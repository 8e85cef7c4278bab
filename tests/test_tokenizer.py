"""Tokenizer: trained with `tokenizers`, loaded through transformers; round trip, truncation, empty input."""
import pytest
from transformers import PreTrainedTokenizerFast

from s2s_qat.data import generate_corpus
from s2s_qat.recipe import TN_EN_CLASSES, parse_recipe
from s2s_qat.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, TextCodec, save_tokenizer, train_tokenizer

ROWS = list(generate_corpus(5, 1500, {c: 1.0 for c in TN_EN_CLASSES}, 1, 2))


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def codec(request, tmp_path_factory):
    cfg = parse_recipe({"name": "x", "tokenizer": {"type": request.param, "vocab_size": 300}}).tokenizer
    tok = train_tokenizer(cfg, (t for r in ROWS[:1200] for t in (r["source"], r["target"])))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(tok, path)
    return TextCodec.load(path.parent)


def test_special_tokens_and_transformers_class(codec):
    assert isinstance(codec.tokenizer, PreTrainedTokenizerFast)
    t = codec.tokenizer
    assert (t.pad_token_id, t.bos_token_id, t.eos_token_id, t.unk_token_id) == (PAD_ID, BOS_ID, EOS_ID, UNK_ID)
    assert t.convert_ids_to_tokens([0, 1, 2, 3]) == ["<pad>", "<s>", "</s>", "<unk>"]


def test_round_trip_on_held_out_sentences(codec):
    for r in ROWS[1200:]:
        for text in (r["source"], r["target"]):
            enc = codec.encode_source(text, 200)
            assert enc.ids[-1] == EOS_ID and not enc.truncated
            assert codec.decode(enc.ids) == text


def test_digits_are_split(codec):
    pieces = codec.tokenizer.convert_ids_to_tokens(codec.pieces("2024"))
    assert [p.lstrip("\u2581") for p in pieces if p.lstrip("\u2581")] == ["2", "0", "2", "4"]


def test_truncation_keeps_eos_and_is_flagged(codec):
    text = " ".join(["meeting"] * 50)
    enc = codec.encode_source(text, 8)
    assert len(enc.ids) == 8 and enc.ids[-1] == EOS_ID and enc.truncated
    assert not codec.encode_source("meeting", 8).truncated


def test_empty_input(codec):
    assert codec.encode_source("", 8).ids == [EOS_ID]
    assert codec.decode([EOS_ID]) == ""
