"""Open what `translate` and `evaluate` are pointed at: a run directory (FP32 teacher, Keras backend) or a folder
holding `encoder.tflite` + `decoder_step.tflite` (an `artifacts/` folder or a ladder variant; TFLite backend).

Decoding settings come from the folder's manifest.json, else from the owning run's recipe, else the defaults.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from s2s_qat.recipe import RuntimeConfig, parse_recipe, parse_section


def owning_run(path: Path) -> Path | None:
    """The run directory that holds PATH (PATH itself, an artifacts folder's parent, a ladder variant's run)."""
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / "recipe.resolved.yaml").is_file():
            return candidate
    return None


def is_tflite_folder(path: Path) -> bool:
    return (path / "encoder.tflite").is_file() and (path / "decoder_step.tflite").is_file()


def runtime_settings(path: Path, beam: int | None = None) -> RuntimeConfig:
    """Raises RecipeError for an unreadable recipe.resolved.yaml."""
    manifest = path / "manifest.json"
    saved = json.loads(manifest.read_text()).get("runtime") if manifest.is_file() else None
    run = owning_run(path)
    if saved:
        runtime = parse_section(RuntimeConfig, saved, "manifest.json:runtime")
    elif run is not None:
        runtime = parse_recipe(yaml.safe_load((run / "recipe.resolved.yaml").read_text())).runtime
    else:
        runtime = RuntimeConfig()
    if beam is not None:
        runtime = dataclasses.replace(runtime, decoding="beam" if beam > 1 else "greedy", beam_size=beam)
    return runtime


BACKENDS = ("auto", "keras", "tflite")


def open_model(path: Path, backend: str = "auto"):
    """(TextCodec, backend). `backend`: `auto` (TFLite for a folder of graphs, Keras for a run directory), `keras`
    (a run's FP32 teacher) or `tflite` (a folder of graphs, or a run's artifacts/). Raises FileNotFoundError
    naming what is missing."""
    from s2s_qat.tokenizer import TextCodec

    path = Path(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "keras" and is_tflite_folder(path):
        raise FileNotFoundError(f"{path} is a folder of TFLite graphs; --backend keras needs a run directory")
    if backend == "tflite" and not is_tflite_folder(path):
        if not is_tflite_folder(path / "artifacts"):
            raise FileNotFoundError(f"{path} holds no encoder.tflite/decoder_step.tflite and no artifacts/ with them")
        path = path / "artifacts"
    if is_tflite_folder(path):
        from s2s_qat.runtime.tflite_backend import TFLiteBackend

        run = owning_run(path)
        if (path / "tokenizer.json").is_file():
            tokenizer = path / "tokenizer.json"
        elif (path / "tokenizer").is_dir():  # an imported checkpoint's own tokenizer files
            tokenizer = path / "tokenizer"
        elif run is not None:
            tokenizer = run / "tokenizer"
        else:
            raise FileNotFoundError(f"{path} has the .tflite graphs but no tokenizer.json, and is not inside a run")
        return TextCodec.load(tokenizer), TFLiteBackend(path / "encoder.tflite", path / "decoder_step.tflite")
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.runtime.keras_backend import KerasBackend

    core, codec = load_teacher(path)
    return codec, KerasBackend(core)
