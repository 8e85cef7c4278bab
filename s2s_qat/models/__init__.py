"""Model family: config, quantization-friendly layers, and the graph builders."""
from s2s_qat.models.config import TransformerConfig
from s2s_qat.models.graphs import (DECODER_INPUTS, DECODER_LAYOUT, DECODER_OUTPUT, ENCODER_INPUTS, ENCODER_OUTPUT,
                                   build_core, build_decoder_step, build_encoder, build_teacher_forced,
                                   teacher_forced_logits)
from s2s_qat.models.transformer import Seq2SeqCore, left_padded_positions

__all__ = ["TransformerConfig", "Seq2SeqCore", "build_core", "build_encoder", "build_decoder_step",
           "build_teacher_forced", "teacher_forced_logits", "left_padded_positions", "ENCODER_INPUTS",
           "ENCODER_OUTPUT", "DECODER_INPUTS", "DECODER_OUTPUT", "DECODER_LAYOUT"]
