"""manifest.json and atomic artifact writes (DESIGN section 4)."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from s2s_qat.atomic import fresh_temp_dir, publish_dir, write_json
from s2s_qat.export.inventory import inventory
from s2s_qat.models import DECODER_LAYOUT
from s2s_qat.tokenizer import TextCodec


def _io(entries: list[dict]) -> dict:
    return {e["signature_name"]: e for e in entries}


def build_manifest(encoder: bytes, decoder_step: bytes, codec: TextCodec, mode: str, recipe_hash: str,
                   variant: str | None = None, runtime: dict | None = None) -> dict:
    """`runtime` (the recipe's decoding settings) lets `translate`/`evaluate` decode an artifacts folder the same way
    wherever it is copied."""
    graphs = {}
    for kind, blob in (("encoder", encoder), ("decoder_step", decoder_step)):
        inv = inventory(blob, kind)
        graphs[kind] = {"file": f"{kind}.tflite", "sha256": hashlib.sha256(blob).hexdigest(), "size_bytes": len(blob),
                        "inputs": _io(inv.inputs), "outputs": _io(inv.outputs), "op_counts": inv.op_counts,
                        "float_ops": inv.float_ops, "quantize_ops": inv.quantize_ops}
    out = graphs["encoder"]["outputs"]["encoder_hidden_states"]
    inp = graphs["decoder_step"]["inputs"]["encoder_hidden_states"]
    return {
        "variant": variant,
        "mode": mode,
        "graphs": graphs,
        "boundary": {"encoder_output": {"dtype": out["dtype"], "scale": out["scale"], "zero_point": out["zero_point"]},
                     "decoder_input": {"dtype": inp["dtype"], "scale": inp["scale"], "zero_point": inp["zero_point"]},
                     "identity": (out["dtype"], out["scale"], out["zero_point"]) ==
                                 (inp["dtype"], inp["scale"], inp["zero_point"])},
        "special_tokens": {"pad": codec.pad_id, "bos": codec.bos_id, "eos": codec.eos_id, "unk": codec.unk_id},
        "layout": {"decoder_step": DECODER_LAYOUT, "source": "right_padded_with_eos",
                   "logits": "next token after the last decoder slot"},
        "runtime": runtime,
        "recipe_hash": recipe_hash,
    }


def write_artifacts(directory: Path, encoder: bytes, decoder_step: bytes, tokenizer: Path, manifest: dict) -> None:
    """encoder.tflite, decoder_step.tflite, the tokenizer and manifest.json, published together (temp dir + rename).

    `tokenizer`: a trained tokenizer's tokenizer.json (copied as tokenizer.json), or an imported checkpoint's tokenizer
    directory (holding codec.json; copied as tokenizer/ with every file, e.g. Marian's SentencePiece models)."""
    tmp = fresh_temp_dir(Path(directory))
    (tmp / "encoder.tflite").write_bytes(encoder)
    (tmp / "decoder_step.tflite").write_bytes(decoder_step)
    tokenizer = Path(tokenizer)
    if tokenizer.is_dir():
        shutil.copytree(tokenizer, tmp / "tokenizer", ignore=shutil.ignore_patterns("stage.json"))
    else:
        shutil.copyfile(tokenizer, tmp / "tokenizer.json")
    write_json(tmp / "manifest.json", manifest)
    publish_dir(tmp, Path(directory))
