"""Data stage: parallel text from the hub, local files or the built-in `tn-en` corpus, and its splits."""
from s2s_qat.data.sources import SPLITS, DataError, build_splits, load_pairs, load_splits, save_splits
from s2s_qat.data.tn_en import CLASS_GENERATORS, generate_corpus

__all__ = ["SPLITS", "DataError", "build_splits", "load_pairs", "load_splits", "save_splits", "CLASS_GENERATORS", "generate_corpus"]
