"""s2s_qat: encoder-decoder Transformers to delegate-ready, full-INT8 TFLite artifacts that still work.

tf_keras (Keras 2) is required by tensorflow-model-optimization; TF must see TF_USE_LEGACY_KERAS=1
before it is first imported, so the package sets it here.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
