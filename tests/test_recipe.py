"""Recipe validation: malformed recipes stop before any work with exit status 2 and a precise message."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from s2s_qat import train
from s2s_qat.recipe import Recipe, RecipeError, dump_resolved, load_recipe, parse_recipe

ROOT = Path(__file__).resolve().parents[1]

MALFORMED = {
    "unknown_top_key": ({"name": "x", "trian": {}}, "trian: unknown key; allowed keys: data, distill, eval"),
    "unknown_nested_key": ({"name": "x", "train": {"bach_size": 8}}, "train.bach_size: unknown key; allowed keys: batch_size"),
    "wrong_type_int": ({"name": "x", "model": {"d_model": "big"}}, 'model.d_model: got "big"; expected an integer >= 8'),
    "bool_is_not_int": ({"name": "x", "train": {"batch_size": True}}, "train.batch_size: got true; expected an integer >= 1"),
    "bad_choice": ({"name": "x", "model": {"activation": "tanh"}},
                   'model.activation: got "tanh"; expected one of "relu", "gelu", "gelu_new", "swish"'),
    "out_of_range": ({"name": "x", "train": {"learning_rate": -0.1}}, "train.learning_rate: got -0.1; expected a number > 0.0 and <= 1.0"),
    "missing_name": ({"seed": 1}, "name: required key is missing; expected a string"),
    "bad_name": ({"name": "../evil"}, 'name: got "../evil"; expected a string matching'),
    "heads_do_not_divide": ({"name": "x", "model": {"d_model": 100, "attention_heads": 3}},
                            "model.attention_heads: got 3; expected a divisor of model.d_model (100)"),
    "unknown_class": ({"name": "x", "data": {"tn_en": {"classes": {"roman": 1.0}}}},
                      "data.tn_en.classes.roman: unknown key; allowed keys: cardinal, date"),
    "section_not_mapping": ({"name": "x", "model": [1, 2]}, "model: got [1, 2]; expected a mapping of keys"),
    "unavailable_variant": ({"name": "x", "ladder": {"variants": ["student-int4"]}}, 'ladder.variants[0]: got "student-int4"; expected one of fp32'),
    "distill_without_variant": ({"name": "x", "distill": {"enabled": True}}, "distill.enabled: got true; expected true exactly when ladder.variants lists student-fp32"),
    "qat_without_variant": ({"name": "x", "qat": {"enabled": True}}, "qat.enabled: got true; expected true exactly when ladder.variants lists qat-int8"),
    "min_above_max": ({"name": "x", "data": {"tn_en": {"min_entities": 3, "max_entities": 2}}},
                      "data.tn_en.min_entities: got 3; expected <= data.tn_en.max_entities (2)"),
    "hub_without_name": ({"name": "x", "data": {"source": "hub"}}, 'data.hub.name: got null; expected a dataset id'),
    "max_new_tokens_too_long": ({"name": "x", "model": {"target_length": 8}, "runtime": {"max_new_tokens": 9}},
                                "runtime.max_new_tokens: got 9; expected <= model.target_length (8)"),
    "carrier_range_order": ({"name": "x", "data": {"tn_en": {"carrier_words": [5, 2]}}},
                            "data.tn_en.carrier_words: got [5, 2]; expected values in non-decreasing order"),
    "path_with_trained_teacher": ({"name": "x", "teacher": {"path": "ckpt/"}},
                                  'teacher.path: got "ckpt/"; expected null when teacher.source is "train"'),
    "top_level_not_mapping": (["name", "x"], "<top level>: got ['name', 'x']; expected a mapping of keys"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_recipe_rejected_before_any_work(case, tmp_path, capsys):
    raw, expected = MALFORMED[case]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "run"
    assert train.main([str(path), "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert not run_dir.exists()


def test_invalid_yaml_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    assert train.main([str(bad)]) == 2
    assert "is not valid YAML" in capsys.readouterr().err
    assert train.main([str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_all_problems_reported_at_once():
    with pytest.raises(RecipeError) as info:
        parse_recipe({"name": "x", "train": {"batch_size": 0, "max_steps": "many"}, "model": {"dropout": 2}})
    paths = [p for p, _ in info.value.problems]
    assert paths == ["model.dropout", "train.batch_size", "train.max_steps"]


def test_cli_exit_status_is_2_in_a_real_process(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: x\nmodel: {d_model: -1}\n")
    proc = subprocess.run([sys.executable, "-m", "s2s_qat.train", str(path), "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "model.d_model: got -1; expected an integer >= 8" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["tn_en_small.yaml", "tn_en_bench.yaml"])
def test_shipped_recipes_parse_and_resolved_form_round_trips(name):
    recipe = load_recipe(ROOT / "recipes" / name)
    assert isinstance(recipe, Recipe)
    assert parse_recipe(yaml.safe_load(dump_resolved(recipe))) == recipe


def test_section_hash_tracks_only_its_sections():
    a = parse_recipe({"name": "x"})
    b = parse_recipe({"name": "x", "train": {"batch_size": 8}})
    assert a.section_hash("data") == b.section_hash("data")
    assert a.section_hash("train") != b.section_hash("train")


def test_recipe_docs_are_up_to_date():
    proc = subprocess.run([sys.executable, "scripts/gen_recipe_docs.py", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
