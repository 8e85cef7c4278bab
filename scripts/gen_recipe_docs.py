"""Regenerate the key table of recipes/README.md from the recipe schema (the single source of truth).

    python scripts/gen_recipe_docs.py          # rewrite recipes/README.md
    python scripts/gen_recipe_docs.py --check  # exit 1 when the file is out of date (used by the tests)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from s2s_qat.recipe import iter_keys

HEADER = """# Recipe keys

A recipe is one YAML file, parsed with `yaml.safe_load` and validated before any work starts. An unknown
key, a wrong type or a bad value stops the run with a message naming the key path, the value and what is
allowed (exit status 2; nothing is written). Every run saves the fully resolved recipe as
`runs/<name>/recipe.resolved.yaml`.

Recipes here:
- `tn_en_small.yaml`: the built-in default (text normalization, small teacher, the diagnostic ladder; about 9 minutes on 2 cores).
- `tn_en_bench.yaml`: the benchmark (harder corpus, larger teacher; under an hour on 2 cores).

This table is generated from `s2s_qat/recipe.py` by `python scripts/gen_recipe_docs.py`.

| key | type / allowed | default | meaning |
|---|---|---|---|
"""


def render() -> str:
    rows = []
    for path, kind, default, doc in iter_keys():
        shown = "" if kind == "section" else f"`{json.dumps(default)}`"
        rows.append(f"| `{path}` | {kind.replace('|', '/')} | {shown} | {doc.replace('|', '/')} |")
    return HEADER + "\n".join(rows) + "\n"


def main() -> int:
    target = Path(__file__).resolve().parents[1] / "recipes" / "README.md"
    text = render()
    if "--check" in sys.argv:
        if not target.is_file() or target.read_text() != text:
            print(f"{target} is out of date: run python scripts/gen_recipe_docs.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
