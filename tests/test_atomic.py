"""s2s_qat.atomic: a failed write leaves the old file and no temp file behind."""
from pathlib import Path

import numpy as np
import pytest

from s2s_qat.atomic import write_bytes, write_with


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path: Path):
    target = tmp_path / "graph.tflite"
    write_bytes(target, b"old")

    def broken(tmp: Path):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["graph.tflite"]


def test_write_with_keeps_suffix_for_writers_that_need_it(tmp_path: Path):
    target = tmp_path / "rows.npz"
    write_with(target, lambda tmp: np.savez(tmp, a=np.arange(3)))  # np.savez appends .npz unless present
    with np.load(target) as data:
        assert data["a"].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npz"]
