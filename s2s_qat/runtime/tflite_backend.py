"""TFLite backend: the ai-edge-litert interpreter, signature runners, inputs addressed by name.

The encoder's output is kept in its own dtype and quantization; at the boundary it is passed through as raw
bytes when the decoder input has the same (scale, zero point), requantized when they differ, and
(de)quantized when one side is float. Greedy decoding takes the argmax of the raw (int8) logits; beam search
uses the dequantized ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from s2s_qat.runtime.quantization import dequantize, quantize, requantize

SIGNATURE = "serving_default"


@dataclass(frozen=True)
class TensorContract:
    dtype: np.dtype
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    @classmethod
    def from_details(cls, d: dict) -> "TensorContract":
        scale, zp = d["quantization"]
        return cls(np.dtype(d["dtype"]), tuple(int(x) for x in d["shape"]), float(scale), int(zp))

    @property
    def quantized(self) -> bool:
        return self.dtype in (np.int8, np.int16) and self.scale > 0


def boundary(values: np.ndarray, src: TensorContract, dst: TensorContract) -> np.ndarray:
    """Carry encoder_hidden_states from the encoder output contract to the decoder input contract."""
    if src.quantized and dst.quantized and src.dtype == dst.dtype == np.int8:
        return requantize(values, src.scale, src.zero_point, dst.scale, dst.zero_point)
    real = dequantize(values, src.scale, src.zero_point) if src.quantized else values.astype(np.float32)
    if dst.quantized and dst.dtype == np.int8:
        return quantize(real, dst.scale, dst.zero_point)
    if dst.quantized:  # int16 activations (16x8): symmetric, zero point 0
        return np.clip(np.round(real / dst.scale), -32768, 32767).astype(np.int16)
    return real.astype(dst.dtype)


class TFLiteBackend:
    def __init__(self, encoder: str | Path | bytes, decoder_step: str | Path | bytes, num_threads: int | None = None):
        self.encoder = self._interpreter(encoder, num_threads)
        self.decoder = self._interpreter(decoder_step, num_threads)
        self._enc = self.encoder.get_signature_runner(SIGNATURE)
        self._dec = self.decoder.get_signature_runner(SIGNATURE)
        enc_in, enc_out = self._enc.get_input_details(), self._enc.get_output_details()
        dec_in, dec_out = self._dec.get_input_details(), self._dec.get_output_details()
        self.memory_out = TensorContract.from_details(enc_out["encoder_hidden_states"])
        self.memory_in = TensorContract.from_details(dec_in["encoder_hidden_states"])
        self.logits_out = TensorContract.from_details(dec_out["logits"])
        self.source_length = int(enc_in["input_ids"]["shape"][1])
        self.target_length = int(dec_in["decoder_input_ids"]["shape"][1])

    @staticmethod
    def _interpreter(model: str | Path | bytes, num_threads: int | None) -> Interpreter:
        if isinstance(model, (bytes, bytearray)):
            return Interpreter(model_content=bytes(model), num_threads=num_threads)
        return Interpreter(model_path=str(model), num_threads=num_threads)

    def encode(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        out = self._enc(input_ids=input_ids.astype(np.int32), attention_mask=attention_mask.astype(np.int32))
        return boundary(out["encoder_hidden_states"], self.memory_out, self.memory_in)

    def decode_step_raw(self, decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask) -> np.ndarray:
        """Logits [V] as the graph returns them (int8 for full-INT8 graphs)."""
        out = self._dec(decoder_input_ids=decoder_input_ids.astype(np.int32),
                        decoder_attention_mask=decoder_attention_mask.astype(np.int32),
                        encoder_hidden_states=memory, encoder_attention_mask=encoder_attention_mask.astype(np.int32))
        return out["logits"][0]

    def dequantize_logits(self, raw: np.ndarray) -> np.ndarray:
        if self.logits_out.quantized:
            return dequantize(raw, self.logits_out.scale, self.logits_out.zero_point)
        return raw.astype(np.float32)

    def decode_step(self, decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask) -> np.ndarray:
        """Float logits (dequantized when the graph's are int8), for beam search."""
        return self.dequantize_logits(
            self.decode_step_raw(decoder_input_ids, decoder_attention_mask, memory, encoder_attention_mask))
