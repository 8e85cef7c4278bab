"""Host runtime: one generation loop (greedy, beam) over interchangeable backends."""
from s2s_qat.runtime.backend import Seq2SeqBackend, left_pad_prefix, pad_source
from s2s_qat.runtime.generate import (GenerationSettings, Hypothesis, beam_search, generate, greedy, greedy_batch,
                                      log_softmax)
from s2s_qat.runtime.keras_backend import KerasBackend
from s2s_qat.runtime.translator import TranslationStats, Translator

__all__ = ["Seq2SeqBackend", "left_pad_prefix", "pad_source", "GenerationSettings", "Hypothesis", "beam_search",
           "generate", "greedy", "greedy_batch", "log_softmax", "KerasBackend", "TranslationStats", "Translator"]
