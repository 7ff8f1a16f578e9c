"""Store: atomic per-cell files; a failed write leaves nothing under the cell's name."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.cell import failed_frame
from benchmarks.config import Cell
from benchmarks.store import COLUMNS, Store

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows(key: str, n: int = 3) -> pd.DataFrame:
    return pd.DataFrame(
        [{c: (key if c == "cell_key" else 0) for c in COLUMNS} | {"status": "ok", "dice": 0.5} for _ in range(n)]
    )


def test_write_read_roundtrip(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.write("a", _rows("a"))
    store.write("b", _rows("b", 2))
    rows = store.read()
    assert sorted(rows["cell_key"]) == ["a"] * 3 + ["b"] * 2
    assert store.status("a") == "ok" and store.status("zzz") is None


def test_interrupted_write_leaves_no_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path)
    store.write("a", _rows("a"))

    def boom(self: pd.DataFrame, fh: object, **kw: object) -> None:
        fh.write(b"half a parquet file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", boom)
    with pytest.raises(KeyboardInterrupt):
        store.write("b", _rows("b"))
    monkeypatch.undo()
    assert store.status("b") is None
    assert sorted(p.name for p in store.cells.iterdir()) == ["a.parquet"]
    assert len(store.read()) == 3


def test_missing_columns_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lack columns"):
        Store(tmp_path).write("a", pd.DataFrame({"cell_key": ["a"]}))


def test_readme_lists_every_store_column() -> None:
    """The README's store paragraph names every column a cell's rows carry (scores a method adds aside)."""
    columns = set(failed_frame(Cell("s", "phantom", "01-t2-WT", "01-t1-WT", "finetune", "unet", 0), True, "", "cpu"))
    text = README.read_text()
    paragraph = text[text.index("The store (`--out`") :].split("\n\n")[0]
    listed = {name.strip() for span in re.findall(r"`([^`]*)`", paragraph) for name in span.split(",")}
    assert len(columns) > 40 and not columns - listed, f"README's store paragraph misses {sorted(columns - listed)}"
