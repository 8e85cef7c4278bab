"""Local files through `datasets`: json/jsonl/csv/tsv/parquet, dotted columns, clear errors."""
import json

import pandas as pd
import pytest

from s2s_qat.data import DataError, build_splits
from s2s_qat.recipe import parse_recipe

ROWS = [{"src": f"item {i}", "tgt": f"thing {i}"} for i in range(60)]


def _recipe(train, **data):
    return parse_recipe({"name": "x", "data": {"source": "files", "files": {"train": str(train)},
                                               "source_column": "src", "target_column": "tgt",
                                               "splits": {"validation": 5, "test": 5, "calibration": 5}, **data}})


@pytest.mark.parametrize("ext", ["jsonl", "json", "csv", "tsv", "parquet"])
def test_local_file_formats(tmp_path, ext):
    path = tmp_path / f"train.{ext}"
    frame = pd.DataFrame(ROWS)
    if ext == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in ROWS))
    elif ext == "json":
        frame.to_json(path, orient="records", lines=True)
    elif ext == "csv":
        frame.to_csv(path, index=False)
    elif ext == "tsv":
        frame.to_csv(path, index=False, sep="\t")
    else:
        frame.to_parquet(path)
    recipe = _recipe(path)
    splits = build_splits(recipe.data, recipe.seed)
    assert len(splits["train"]) == 45
    pairs = {(r["source"], r["target"]) for s in splits.values() for r in s}
    assert pairs == {(r["src"], r["tgt"]) for r in ROWS}


def test_dotted_columns_read_translation_dicts(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"translation": {"en": f"a {i}", "de": f"b {i}"}}) for i in range(40)))
    recipe = parse_recipe({"name": "x", "data": {"source": "files", "files": {"train": str(path)},
                                                 "source_column": "translation.en", "target_column": "translation.de",
                                                 "splits": {"validation": 5, "test": 5, "calibration": 5}}})
    splits = build_splits(recipe.data, recipe.seed)
    row = splits["train"][0]
    assert row["source"].replace("a", "b") == row["target"]


def test_missing_file_column_and_too_small(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_splits(_recipe(tmp_path / "none.jsonl").data, 0)
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"a": "x", "b": "y"}) for _ in range(40)))
    with pytest.raises(DataError, match="column 'src'"):
        build_splits(_recipe(path).data, 0)
    small = tmp_path / "s.jsonl"
    small.write_text("\n".join(json.dumps(r) for r in ROWS[:10]))
    with pytest.raises(DataError, match="not enough for held-out splits"):
        build_splits(_recipe(small).data, 0)
    bad = tmp_path / "t.xlsx"
    bad.write_text("x")
    with pytest.raises(DataError, match="unsupported extension"):
        build_splits(_recipe(bad).data, 0)
