"""atomic_write: complete or absent, never half-written, no temporary file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets.core.files import atomic_write


def test_replaces_content_only_when_the_block_completes(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "f.txt"
    with atomic_write(path, "w") as fh:
        fh.write("one")
    assert path.read_text() == "one"
    with pytest.raises(RuntimeError), atomic_write(path, "w") as fh:
        fh.write("two, half")
        raise RuntimeError("killed")
    assert path.read_text() == "one"
    assert sorted(p.name for p in path.parent.iterdir()) == ["f.txt"]


def test_prefix_names_the_temporary_file(tmp_path: Path) -> None:
    seen = []
    with atomic_write(tmp_path / "x.bin", prefix=".x~host~1~") as fh:
        seen = [p.name for p in tmp_path.iterdir()]
        fh.write(b"data")
    assert len(seen) == 1 and seen[0].startswith(".x~host~1~") and seen[0].endswith(".tmp")
    assert (tmp_path / "x.bin").read_bytes() == b"data"
