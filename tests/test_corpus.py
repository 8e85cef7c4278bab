"""Built-in tn-en corpus: determinism, class coverage and the spoken forms of each class."""
import random
import re

import pytest

from s2s_qat.data import CLASS_GENERATORS, build_splits, generate_corpus
from s2s_qat.data.tn_en import gen_money, say_decimal, say_digits, say_int, say_year
from s2s_qat.recipe import TN_EN_CLASSES, parse_recipe

ALL = {c: 1.0 for c in TN_EN_CLASSES}


def test_same_seed_same_data_and_different_seed_different_data():
    a = list(generate_corpus(7, 300, ALL, 1, 3))
    b = list(generate_corpus(7, 300, ALL, 1, 3))
    c = list(generate_corpus(8, 300, ALL, 1, 3))
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) > 250


def test_every_class_is_generated_and_spoken_forms_have_no_digits():
    rows = list(generate_corpus(1, 2000, ALL, 1, 2))
    seen = {cls for r in rows for cls in r["classes"].split(",")}
    assert seen == set(TN_EN_CLASSES)
    for r in rows:
        assert not re.search(r"\d", r["target"]), r
        assert re.search(r"\d", r["source"]), r


def test_class_weights_select_classes():
    rows = list(generate_corpus(1, 300, {"money": 1.0, "year": 0.0}, 1, 1))
    assert {r["classes"] for r in rows} == {"money"}


@pytest.mark.parametrize("cls", sorted(CLASS_GENERATORS))
def test_each_class_generator_is_deterministic(cls):
    gen = CLASS_GENERATORS[cls]
    a = [gen(random.Random(3)) for _ in range(5)]
    b = [gen(random.Random(3)) for _ in range(5)]
    assert a == b


def test_spoken_forms():
    assert say_int(1234) == "one thousand two hundred thirty four"
    assert say_decimal("3.14") == "three point one four"
    assert say_decimal("1,002.05") == "one thousand two point zero five"
    assert say_digits("0710") == "zero seven one zero"
    assert say_year(1999) == "nineteen ninety nine"
    assert say_year(2005) == "two thousand five"


def test_money_reads_units_and_cents():
    rng = random.Random(0)
    pairs = [gen_money(rng) for _ in range(200)]
    for written, spoken in pairs:
        if written.startswith("$") and "." in written:
            dollars, cents = written[1:].replace(",", "").split(".")
            assert spoken == (f"{say_int(int(dollars))} {'dollar' if int(dollars) == 1 else 'dollars'} "
                              f"{say_int(int(cents))} {'cent' if int(cents) == 1 else 'cents'}")


def test_splits_have_requested_sizes_and_do_not_overlap():
    recipe = parse_recipe({"name": "x", "data": {"tn_en": {"num_examples": 400},
                                                 "splits": {"validation": 30, "test": 40, "calibration": 20}}})
    splits = build_splits(recipe.data, recipe.seed)
    assert {k: len(v) for k, v in splits.items()} == {"train": 310, "validation": 30, "test": 40, "calibration": 20}
    again = build_splits(recipe.data, recipe.seed)
    assert splits["test"]["source"] == again["test"]["source"]
