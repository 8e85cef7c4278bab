"""Parallel text through the `datasets` library: hub datasets, local files, built-in corpora."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

datasets.disable_progress_bars()

from s2s_qat.data.tn_en import generate_corpus
from s2s_qat.recipe import DataConfig

SPLITS = ("train", "validation", "test", "calibration")
FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


class DataError(ValueError):
    """Data that cannot be used: a missing file, column or split, or an empty corpus."""


def _column(row: dict[str, Any], name: str) -> Any:
    value: Any = row
    for part in name.split("."):
        value = value[part]
    return value


def _to_pairs(ds: datasets.Dataset, cfg: DataConfig, where: str) -> datasets.Dataset:
    """Select the source/target columns (dotted paths allowed) into a two-column dataset."""
    for col in (cfg.source_column, cfg.target_column):
        top = col.split(".")[0]
        if top not in ds.column_names:
            raise DataError(f"{where}: column {top!r} (from data.*_column {col!r}) not found; "
                            f"columns are: {', '.join(ds.column_names)}")

    def pick(row: dict[str, Any]) -> dict[str, str]:
        return {"source": str(_column(row, cfg.source_column)), "target": str(_column(row, cfg.target_column))}

    keep = {"source", "target"}
    ds = ds.map(pick, remove_columns=[c for c in ds.column_names if c not in keep] or None)
    return ds.select_columns(["source", "target"])


def _load_file(path: str) -> datasets.Dataset:
    file = Path(path)
    if not file.is_file():
        raise DataError(f"data file {path!r} does not exist")
    builder = FILE_BUILDERS.get(file.suffix.lower())
    if builder is None:
        raise DataError(f"data file {path!r}: unsupported extension {file.suffix!r}; allowed: "
                        + ", ".join(sorted(FILE_BUILDERS)))
    kwargs = {"delimiter": "\t"} if file.suffix.lower() == ".tsv" else {}
    return datasets.load_dataset(builder, data_files=str(file), split="train", **kwargs)


def load_raw(cfg: DataConfig, seed: int) -> dict[str, datasets.Dataset]:
    """Named splits as loaded from the source; missing held-out splits are carved later."""
    if cfg.source == "builtin":
        t = cfg.tn_en
        rows = list(generate_corpus(seed, t.num_examples, t.classes, t.min_entities, t.max_entities, t.carrier_words,
                                   t.carrier_vocabulary))
        return {"train": datasets.Dataset.from_list(rows)}
    if cfg.source == "files":
        out = {"train": _to_pairs(_load_file(cfg.files.train), cfg, cfg.files.train)}
        for split in ("validation", "test"):
            path = getattr(cfg.files, split)
            if path:
                out[split] = _to_pairs(_load_file(path), cfg, path)
        return out
    hub = cfg.hub
    wanted = [hub.split] + (["validation", "test"] if hub.splits_from_hub else [])
    out = {}
    for split in wanted:
        ds = datasets.load_dataset(hub.name, hub.config, split=split, revision=hub.revision)
        out["train" if split == hub.split else split] = _to_pairs(ds, cfg, f"{hub.name}:{split}")
    return out


def build_splits(cfg: DataConfig, seed: int) -> datasets.DatasetDict:
    """train / validation / test / calibration, shuffled deterministically; empty rows dropped."""
    raw = load_raw(cfg, seed)
    sizes = cfg.splits
    train = raw["train"].filter(lambda r: bool(r["source"].strip()) and bool(r["target"].strip()))
    train = train.shuffle(seed=seed)
    to_carve = [split for split in ("validation", "test", "calibration") if split not in raw]
    held_out = sum(getattr(sizes, split) for split in to_carve)
    if held_out >= len(train):
        raise DataError(f"the corpus has {len(train)} usable rows, not enough for held-out splits of "
                        f"{held_out} rows (data.splits) plus a training split")
    carved: dict[str, datasets.Dataset] = {split: raw[split] for split in raw if split != "train"}
    start = 0
    for split in to_carve:
        n = getattr(sizes, split)
        carved[split] = train.select(range(start, start + n))
        start += n
    carved["train"] = train.select(range(start, len(train)))
    return datasets.DatasetDict({s: carved[s] for s in SPLITS})


def load_pairs(path: str | Path, source_column: str = "source", target_column: str = "target",
               split: str = "test") -> datasets.Dataset:
    """Evaluation pairs from a file (json/jsonl/csv/tsv/parquet), a saved dataset folder (a run's `data/`), or a run
    directory (its `data/`); `split` picks the split of a saved DatasetDict. Raises DataError naming the problem."""
    path = Path(path)
    if path.is_dir() and (path / "data").is_dir() and not (path / "dataset_dict.json").is_file():
        path = path / "data"
    if path.is_dir():
        try:
            loaded = datasets.load_from_disk(str(path))
        except FileNotFoundError as err:
            raise DataError(f"{path} is not a saved dataset folder (datasets.save_to_disk): {err}") from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{path} has no split {split!r}; splits: {', '.join(loaded)}")
            loaded = loaded[split]
        ds = loaded
    else:
        ds = _load_file(str(path))
    cfg = DataConfig(source_column=source_column, target_column=target_column)
    return _to_pairs(ds, cfg, str(path))


def save_splits(splits: datasets.DatasetDict, directory: Path) -> None:
    splits.save_to_disk(str(directory))


def load_splits(directory: Path) -> datasets.DatasetDict:
    return datasets.load_from_disk(str(directory))
