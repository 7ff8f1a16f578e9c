"""What a run leaves for others (issue 24): files and folders follow the umask; the next command runs as printed."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.store import COLUMNS, Store
from benchmarks.summary import interpreter
from datasets.core.files import atomic_write, umask, umask_mode


@pytest.fixture(params=[0o022, 0o027, 0o002])
def mask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_folders_follow_the_umask(mask: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import leaderboard.build as build

    assert umask() == mask and umask_mode() == 0o666 & ~mask and umask_mode(directory=True) == 0o777 & ~mask
    with atomic_write(tmp_path / "a.bin") as fh:
        fh.write(b"x")
    assert _mode(tmp_path / "a.bin") == 0o666 & ~mask  # not mkstemp's 0600
    store = Store(tmp_path / "out")
    row = {c: 0 for c in COLUMNS} | {"cell_key": "k", "status": "ok", "error": ""}
    assert _mode(store.write("k", pd.DataFrame([row]))) == 0o666 & ~mask
    assert _mode(store.cells) == 0o777 & ~mask
    monkeypatch.setattr(build, "write_outputs", lambda report, folder, *_: (folder / "index.html").write_text("page"))
    build.publish(None, tmp_path / "site")
    assert _mode(tmp_path / "site") == 0o777 & ~mask  # not mkdtemp's 0700
    assert _mode(tmp_path / "site" / "index.html") == 0o666 & ~mask


def test_the_next_command_names_this_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an activated venv ``python`` may lack the packages: the printed command names the one that ran."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    command = interpreter()
    assert command == sys.executable or command in ("python", "python3")
    done = subprocess.run([command, "-c", "import pandas, leaderboard.build"], cwd=Path(__file__).parents[1])
    assert done.returncode == 0
    if command == sys.executable:  # shortened relative to the working folder, e.g. .venv/bin/python
        monkeypatch.chdir(Path(sys.executable).parents[2])
        assert interpreter() == os.path.relpath(sys.executable)
