"""CTranslate2 conversion of a MarianMTModel directory (a `convert to-hf` export or a Marian checkpoint).

CTranslate2's Marian loader assumes Marian's conventions: the last vocabulary entry is `<pad>` (it is dropped with
its weight rows) and decoding starts from a zero embedding (Marian starts from `<pad>`, whose embedding is zero).
A checkpoint that follows them converts as it is. A teacher trained here does not (`<pad>` = 0, decoding starts from
the trained `<s>` embedding): for it the same loader runs with those two assumptions replaced by the checkpoint's
own vocabulary and `decoder_start_token_id`, so CTranslate2 computes the very model transformers loads.
"""
from __future__ import annotations

import json
from pathlib import Path


def follows_marian_convention(hf_dir: Path) -> bool:
    from transformers import AutoTokenizer

    config = json.loads((Path(hf_dir) / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    last = tokenizer.convert_ids_to_tokens(len(tokenizer) - 1)
    return last == "<pad>" and config["decoder_start_token_id"] == config["pad_token_id"] == len(tokenizer) - 1


def convert_to_ctranslate2(hf_dir: Path, out_dir: Path, quantization: str) -> None:
    from ctranslate2.converters import TransformersConverter
    from ctranslate2.converters import transformers as ct2t

    if follows_marian_convention(hf_dir):
        TransformersConverter(str(hf_dir)).convert(str(out_dir), quantization=quantization, force=True)
        return
    marian = type(ct2t._MODEL_LOADERS["MarianConfig"])  # noqa: SLF001 - the registry register_loader fills

    class StartTokenMarianLoader(marian):
        """Marian's loader with the checkpoint's own vocabulary and decoder start token."""

        def get_model_spec(self, model):
            model.config.normalize_before = False
            model.config.normalize_embedding = False
            return ct2t.BartLoader.get_model_spec(self, model)  # every vocabulary row kept

        def set_config(self, config, model, tokenizer):
            super().set_config(config, model, tokenizer)
            config.decoder_start_token = tokenizer.convert_ids_to_tokens(model.config.decoder_start_token_id)

        def set_decoder(self, spec, decoder):
            ct2t.BartLoader.set_decoder(self, spec, decoder)  # starts from the start token's own embedding

        def get_vocabulary(self, model, tokenizer):
            return ct2t.BartLoader.get_vocabulary(self, model, tokenizer)

    original = ct2t._MODEL_LOADERS["MarianConfig"]  # noqa: SLF001
    ct2t.register_loader("MarianConfig")(StartTokenMarianLoader)
    try:
        TransformersConverter(str(hf_dir)).convert(str(out_dir), quantization=quantization, force=True)
    finally:
        ct2t._MODEL_LOADERS["MarianConfig"] = original  # noqa: SLF001
