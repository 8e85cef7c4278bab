"""Hugging Face Marian / BART checkpoints <-> the project's model family.

The project's layers mirror the Hugging Face module tree (`shared`, `encoder.layers.{i}.self_attn.q_proj`, ...), so a
checkpoint maps weight by weight: linear weights are stored (out, in) by PyTorch and (in, out) here, everything else
is copied. The softmax scale that Hugging Face applies after `q_proj` is folded into the projection at call time
here, so the stored `q_proj` weights are the same numbers.

Reading needs no PyTorch for safetensors files (`safetensors.numpy`); `pytorch_model.bin` needs torch.
Every problem (unsupported config value, missing, unexpected or misshapen weight) is collected and raised in one
`CheckpointError`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from s2s_qat.models import Seq2SeqCore, TransformerConfig
from s2s_qat.models.layers import sinusoidal_table

SUPPORTED_TYPES = ("marian", "bart")
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "gelu_new": "gelu_new", "swish": "swish", "silu": "swish"}
BART_POSITION_OFFSET = 2
HF_LAYER_NORM_EPS = 1e-5  # torch.nn.LayerNorm's default, used by both Marian and BART


class CheckpointError(ValueError):
    """A checkpoint that cannot become (or come from) the project's model; `problems` lists every reason."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}:\n  " + "\n  ".join(problems))


# === Config ===

def config_from_hf(hf: dict, source_length: int, target_length: int, source: str = "config.json"
                   ) -> TransformerConfig:
    """The project's config for a Marian or BART `config.json` (as a dict), with the deployment lengths."""
    problems = []
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_TYPES:
        problems.append(f"model_type: got {model_type!r}; supported: {', '.join(SUPPORTED_TYPES)}")

    def one_value(a: str, b: str) -> None:
        if hf.get(a) != hf.get(b):
            problems.append(f"{a} ({hf.get(a)}) != {b} ({hf.get(b)}): the project's model uses one value for both")

    one_value("encoder_attention_heads", "decoder_attention_heads")
    one_value("encoder_ffn_dim", "decoder_ffn_dim")
    activation = hf.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        problems.append(f"activation_function: got {activation!r}; supported: {', '.join(sorted(ACTIVATIONS))}")
    if hf.get("decoder_vocab_size") not in (None, hf.get("vocab_size")):
        problems.append(f"decoder_vocab_size ({hf['decoder_vocab_size']}) != vocab_size ({hf.get('vocab_size')}): "
                        f"separate target vocabularies are not supported")
    if hf.get("share_encoder_decoder_embeddings", True) is not True:
        problems.append("share_encoder_decoder_embeddings: got false; only one shared embedding table is supported")
    for key in ("add_final_layer_norm", "normalize_before", "normalize_embedding"):  # mBART-style options
        if hf.get(key):
            problems.append(f"{key}: got true; Marian/BART post-LayerNorm blocks only")
    max_pos = int(hf.get("max_position_embeddings", 0))
    for name, length in (("source_length", source_length), ("target_length", target_length)):
        if length > max_pos:
            problems.append(f"{name} {length} exceeds the checkpoint's max_position_embeddings ({max_pos})")
    d_model, heads = hf.get("d_model", 0), hf.get("encoder_attention_heads", 1) or 1
    if d_model % heads:
        problems.append(f"d_model ({d_model}) is not divisible by encoder_attention_heads ({heads})")
    if problems:
        raise CheckpointError(source, problems)
    bart = model_type == "bart"
    return TransformerConfig(
        vocab_size=int(hf["vocab_size"]), d_model=int(d_model), encoder_layers=int(hf["encoder_layers"]),
        decoder_layers=int(hf["decoder_layers"]), attention_heads=int(heads), ffn_dim=int(hf["encoder_ffn_dim"]),
        activation=ACTIVATIONS[activation], normalize_before=False,
        scale_embedding=bool(hf.get("scale_embedding", False)),
        position_embedding="learned" if bart else "sinusoidal", position_offset=BART_POSITION_OFFSET if bart else 0,
        max_position_embeddings=max_pos, layernorm_embedding=bart,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)), final_logits_bias=True,
        layer_norm_eps=HF_LAYER_NORM_EPS, dropout=float(hf.get("dropout", 0.1)),
        attention_dropout=float(hf.get("attention_dropout", 0.0)), source_length=source_length,
        target_length=target_length, pad_token_id=int(hf["pad_token_id"]),
        bos_token_id=int(hf["decoder_start_token_id"]), eos_token_id=int(hf["eos_token_id"]))


def marian_config(cfg: TransformerConfig) -> dict:
    """A MarianConfig dict for a model of the project (post-LN, sinusoidal positions, no embedding LayerNorm)."""
    problems = []
    if cfg.normalize_before:
        problems.append("normalize_before: true; Marian blocks are post-LayerNorm")
    if cfg.position_embedding != "sinusoidal":
        problems.append(f"position_embedding: {cfg.position_embedding}; Marian uses sinusoidal positions")
    if cfg.layernorm_embedding:
        problems.append("layernorm_embedding: true; Marian has no embedding LayerNorm")
    if cfg.layer_norm_eps != HF_LAYER_NORM_EPS:
        problems.append(f"layer_norm_eps: {cfg.layer_norm_eps}; Marian's LayerNorm uses {HF_LAYER_NORM_EPS}")
    if not cfg.final_logits_bias:
        problems.append("final_logits_bias: false; Marian always adds one (it would be zeros: set it true)")
    if problems:
        raise CheckpointError("Marian export", problems)
    return {
        "model_type": "marian", "architectures": ["MarianMTModel"], "vocab_size": cfg.vocab_size,
        "decoder_vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "encoder_layers": cfg.encoder_layers,
        "decoder_layers": cfg.decoder_layers, "encoder_attention_heads": cfg.attention_heads,
        "decoder_attention_heads": cfg.attention_heads, "encoder_ffn_dim": cfg.ffn_dim, "decoder_ffn_dim": cfg.ffn_dim,
        "activation_function": cfg.activation, "scale_embedding": cfg.scale_embedding,
        "max_position_embeddings": cfg.max_position_embeddings, "dropout": cfg.dropout,
        "attention_dropout": cfg.attention_dropout, "activation_dropout": 0.0, "pad_token_id": cfg.pad_token_id,
        "eos_token_id": cfg.eos_token_id, "decoder_start_token_id": cfg.bos_token_id,
        "forced_eos_token_id": None, "share_encoder_decoder_embeddings": True,
        "tie_word_embeddings": cfg.tie_word_embeddings, "is_encoder_decoder": True,
    }


# === Weights ===

def _linear(prefix: str, layer) -> list[tuple[str, object, bool]]:
    return [(f"{prefix}.weight", layer.kernel, True), (f"{prefix}.bias", layer.bias, False)]


def _norm(prefix: str, layer) -> list[tuple[str, object, bool]]:
    return [(f"{prefix}.weight", layer.gamma, False), (f"{prefix}.bias", layer.beta, False)]


def _attention(prefix: str, attn) -> list[tuple[str, object, bool]]:
    return [p for name in ("q_proj", "k_proj", "v_proj", "out_proj")
            for p in _linear(f"{prefix}.{name}", getattr(attn, name))]


def weight_pairs(core: Seq2SeqCore) -> list[tuple[str, object, bool]]:
    """(Hugging Face key, variable, transposed) for every variable of `core`."""
    cfg = core.cfg
    if cfg.normalize_before:
        raise CheckpointError("model", ["normalize_before: true; Marian/BART checkpoints are post-LayerNorm"])
    pairs = [("model.shared.weight", core.embed_tokens.table, False)]
    if cfg.final_logits_bias:
        pairs.append(("final_logits_bias", core.final_logits_bias, False))
    if not cfg.tie_word_embeddings:
        pairs.append(("lm_head.weight", core.lm_head, False))
    for side, positions, norm in (("encoder", core.enc_positions, core.enc_layernorm_embedding),
                                  ("decoder", core.dec_positions, core.dec_layernorm_embedding)):
        if cfg.position_embedding == "learned":
            pairs.append((f"model.{side}.embed_positions.weight", positions.table, False))
        if norm is not None:
            pairs += _norm(f"model.{side}.layernorm_embedding", norm)
    for i, block in enumerate(core.encoder_blocks):
        p = f"model.encoder.layers.{i}"
        pairs += (_attention(f"{p}.self_attn", block.self_attn) + _norm(f"{p}.self_attn_layer_norm", block.self_attn_layer_norm)
                  + _linear(f"{p}.fc1", block.ffn.fc1) + _linear(f"{p}.fc2", block.ffn.fc2)
                  + _norm(f"{p}.final_layer_norm", block.final_layer_norm))
    for i, block in enumerate(core.decoder_blocks):
        p = f"model.decoder.layers.{i}"
        pairs += (_attention(f"{p}.self_attn", block.self_attn) + _norm(f"{p}.self_attn_layer_norm", block.self_attn_layer_norm)
                  + _attention(f"{p}.encoder_attn", block.cross_attn)
                  + _norm(f"{p}.encoder_attn_layer_norm", block.cross_attn_layer_norm)
                  + _linear(f"{p}.fc1", block.ffn.fc1) + _linear(f"{p}.fc2", block.ffn.fc2)
                  + _norm(f"{p}.final_layer_norm", block.final_layer_norm))
    return pairs


def _derived(core: Seq2SeqCore) -> dict[str, tuple[np.ndarray, str]]:
    """Keys a checkpoint may hold that are copies of mapped weights or constants here: they must agree.
    key -> (expected value, what it must equal)."""
    cfg = core.cfg
    table = core.embed_tokens.table.numpy()
    shared = "model.shared.weight (separate encoder, decoder or output tables are not supported)"
    out = {"model.encoder.embed_tokens.weight": (table, shared), "model.decoder.embed_tokens.weight": (table, shared)}
    if cfg.tie_word_embeddings:
        out["lm_head.weight"] = (table, "model.shared.weight (tie_word_embeddings is true)")
    if cfg.position_embedding == "sinusoidal":
        sinusoid = sinusoidal_table(cfg.max_position_embeddings, cfg.d_model)
        for side in ("encoder", "decoder"):
            out[f"model.{side}.embed_positions.weight"] = (sinusoid, "Marian's sinusoidal table")
    return out


def _value(key: str, variable, transposed: bool, state: dict[str, np.ndarray]) -> np.ndarray:
    value = np.asarray(state[key], np.float32)
    if key == "final_logits_bias":
        value = value.reshape(-1)
    return value.T if transposed else value


def load_weights(core: Seq2SeqCore, state: dict[str, np.ndarray], source: str = "checkpoint") -> None:
    """Assign a Hugging Face state dict to `core` (built), after checking every key and shape."""
    pairs = weight_pairs(core)
    problems = []
    mapped = {key for key, _, _ in pairs}
    for key, variable, transposed in pairs:
        if key not in state:
            problems.append(f"missing weight {key} (for {variable.name}, shape {tuple(variable.shape)})")
            continue
        value = _value(key, variable, transposed, state)
        if value.shape != tuple(variable.shape):
            shape = tuple(np.shape(state[key]))
            problems.append(f"weight {key} has shape {shape}; expected {tuple(reversed(variable.shape)) if transposed else tuple(variable.shape)}")
    derived_keys = set(_derived(core)) - mapped
    unexpected = sorted(set(state) - mapped - derived_keys)
    problems += [f"unexpected weight {key} (shape {tuple(np.shape(state[key]))})" for key in unexpected]
    if problems:
        raise CheckpointError(source, problems)
    for key, variable, transposed in pairs:
        variable.assign(_value(key, variable, transposed, state))
    for key, (expected, what) in _derived(core).items():  # after assignment: tied copies vs the loaded table
        if key in state and key not in mapped:
            value = np.asarray(state[key], np.float32)
            if value.shape != expected.shape:
                problems.append(f"weight {key} has shape {value.shape}; it must equal {what}, shape {expected.shape}")
            elif np.max(np.abs(value - expected)) > 1e-5:
                problems.append(f"weight {key} differs from {what}: max abs difference "
                                f"{np.max(np.abs(value - expected)):.3g}")
    if problems:
        raise CheckpointError(source, problems)


def hf_state(core: Seq2SeqCore) -> dict[str, np.ndarray]:
    """The Hugging Face state dict of `core` (tied copies and sinusoidal tables included, as transformers saves)."""
    state = {key: (variable.numpy().T if transposed else variable.numpy()).astype(np.float32)
             for key, variable, transposed in weight_pairs(core)}
    if "final_logits_bias" in state:
        state["final_logits_bias"] = state["final_logits_bias"].reshape(1, -1)
    for key, (value, _) in _derived(core).items():
        state.setdefault(key, np.asarray(value, np.float32))
    return state


def read_state(directory: Path) -> dict[str, np.ndarray]:
    """model.safetensors (or sharded safetensors) without torch; pytorch_model.bin with torch."""
    directory = Path(directory)
    files = sorted(directory.glob("*.safetensors"))
    if files:
        from safetensors.numpy import load_file

        state = {}
        for f in files:
            state.update(load_file(str(f)))
        return state
    bin_file = directory / "pytorch_model.bin"
    if bin_file.is_file():
        try:
            import torch
        except ImportError:
            raise CheckpointError(str(directory), ["pytorch_model.bin needs torch to read; install torch or convert "
                                                   "the checkpoint to safetensors"]) from None
        return {k: v.float().numpy() for k, v in torch.load(bin_file, map_location="cpu", weights_only=True).items()}
    raise CheckpointError(str(directory), ["no model.safetensors or pytorch_model.bin"])


def import_checkpoint(directory: Path, source_length: int, target_length: int, mask_value: float | None = None,
                      layernorm_variance: str | None = None) -> Seq2SeqCore:
    """A Marian or BART checkpoint directory -> the project's FP32 model with its weights (`mask_value`: the
    deployment graphs' bounded mask, `layernorm_variance` their LayerNorm form; default the project's)."""
    from s2s_qat.models import build_core

    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CheckpointError(str(directory), ["config.json is missing"])
    cfg = config_from_hf(json.loads(config_file.read_text()), source_length, target_length, str(config_file))
    if mask_value is not None:
        cfg = dataclasses.replace(cfg, mask_value=mask_value)
    if layernorm_variance is not None:
        cfg = dataclasses.replace(cfg, layernorm_variance=layernorm_variance)
    core = build_core(cfg)
    load_weights(core, read_state(directory), str(directory))
    return core


def export_marian(core: Seq2SeqCore, directory: Path) -> None:
    """config.json + model.safetensors of a MarianMTModel (the tokenizer files are the caller's)."""
    from safetensors.numpy import save_file

    directory = Path(directory)
    config = marian_config(core.cfg)
    directory.mkdir(parents=True, exist_ok=True)
    state = hf_state(core)
    if core.cfg.tie_word_embeddings:  # transformers re-ties these on load; safetensors refuses shared copies anyway
        for key in ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"):
            state.pop(key, None)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


__all__ = ["CheckpointError", "config_from_hf", "export_marian", "hf_state", "import_checkpoint", "load_weights",
           "marian_config", "read_state", "weight_pairs"]
