"""Text in, text out: tokenizer + backend + host loop, with truncation counting and timing."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from s2s_qat.recipe import RuntimeConfig
from s2s_qat.runtime.backend import Seq2SeqBackend, pad_source
from s2s_qat.runtime.generate import GenerationSettings, Hypothesis, generate
from s2s_qat.tokenizer import TextCodec


@dataclass
class TranslationStats:
    sentences: int = 0
    truncated_sources: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    unfinished: int = 0  # hit max_new_tokens without EOS

    @property
    def tokens_per_second(self) -> float | None:
        return self.generated_tokens / self.seconds if self.seconds > 0 else None


@dataclass
class Translator:
    codec: TextCodec
    backend: Seq2SeqBackend
    settings: GenerationSettings
    stats: TranslationStats = field(default_factory=TranslationStats)

    @classmethod
    def create(cls, codec: TextCodec, backend: Seq2SeqBackend, runtime: RuntimeConfig) -> "Translator":
        limit = backend.target_length if runtime.max_new_tokens is None else runtime.max_new_tokens
        settings = GenerationSettings(
            bos_id=codec.bos_id, eos_id=codec.eos_id, pad_id=codec.pad_id, max_new_tokens=limit,
            beam_size=runtime.beam_size if runtime.decoding == "beam" else 1,
            length_penalty=runtime.length_penalty, no_repeat_ngram_size=runtime.no_repeat_ngram_size)
        return cls(codec, backend, settings)

    def hypothesis(self, text: str) -> Hypothesis | None:
        """None for an empty input (nothing to translate)."""
        if not text.strip():
            return None
        encoded = self.codec.encode_source(text, self.backend.source_length)
        self.stats.truncated_sources += int(encoded.truncated)
        ids, mask = pad_source(encoded.ids, self.backend.source_length, self.codec.pad_id)
        start = time.perf_counter()
        memory = self.backend.encode(ids, mask)
        hyp = generate(self.backend, memory, mask, self.settings)
        self.stats.seconds += time.perf_counter() - start
        self.stats.generated_tokens += len(hyp.tokens)
        self.stats.unfinished += int(not hyp.finished)
        return hyp

    def translate(self, text: str) -> str:
        self.stats.sentences += 1
        hyp = self.hypothesis(text)
        return "" if hyp is None else self.codec.decode(hyp.tokens)
