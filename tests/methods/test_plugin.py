"""A third-party method registered through the ``ntbench.methods`` entry point, using the guide's code."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from methods.base import METHODS, MethodConfigError
from methods.losses import base_loss

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "adding-a-baseline.md"


def code_block(lang: str, first_line: str | None = None) -> str:
    """The guide's fenced ``lang`` block (the one starting with ``first_line`` if given)."""
    blocks = re.findall(rf"```{lang}\n(.*?)```", GUIDE.read_text(), flags=re.DOTALL)
    matching = [b for b in blocks if first_line is None or b.startswith(first_line)]
    assert len(matching) == 1, f"{GUIDE}: expected one {lang} block starting {first_line!r}"
    return matching[0]


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the guide's package as a distribution on sys.path (what ``pip install`` leaves behind)."""
    import tomllib  # stdlib from Python 3.11 (imported here so import sorting is the same for any target)

    project = tomllib.loads(code_block("toml"))["project"]
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mymethod.py").write_text(code_block("python", "# mypkg/mymethod.py"))
    info = tmp_path / f"{project['name']}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = [
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in project["entry-points"].items()
    ]
    (info / "entry_points.txt").write_text("\n".join(lines))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(METHODS, "_items", dict(METHODS._items))  # the plugin's registration is undone
    monkeypatch.setattr(METHODS, "_plugins_loaded", False)
    yield
    for name in ("mypkg.mymethod", "mypkg"):
        sys.modules.pop(name, None)


def test_plugin_is_listed_with_its_hyperparameters(installed_plugin: None) -> None:
    assert "mymethod" in METHODS.names()
    cls = METHODS.get("mymethod")
    assert cls.hparams["weight"].default == 0.05 and cls.hparams["weight"].help
    assert cls(weight="0.1").params["weight"] == 0.1  # a CLI string converted to the declared type
    with pytest.raises(MethodConfigError, match=r"weight=-1\.0 must be >= 0"):  # the guide's example
        cls(weight=-1)


def test_plugin_loss_matches_numpy(installed_plugin: None) -> None:
    method = METHODS.get("mymethod")(weight=0.1)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g)
    labels = torch.randint(0, 3, (2, 8, 8), generator=g)
    z = logits.double().numpy()
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    entropy = float(-(p * np.log(p)).sum(1).mean())
    expected = base_loss(logits, labels).item() - 0.1 * entropy
    assert method.loss({"image": torch.zeros(2, 1, 8, 8), "label": labels}, logits, None).item() == pytest.approx(
        expected, rel=1e-5
    )


def test_plugin_runs_end_to_end_through_the_cli(
    installed_plugin: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks.cli import main

    assert main(["--list-methods"]) == 0
    assert "mymethod" in capsys.readouterr().out
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--method", "mymethod", "--param", "mymethod.weight=0.1", "--steps", "2", "--few-shot", "1"]
    assert main([*args, "--out", str(out), "--cache-dir", str(cache)]) == 0
    import pandas as pd

    rows = pd.concat(pd.read_parquet(p) for p in (out / "cells").glob("*.parquet"))
    assert set(rows["method"]) == {"mymethod"} and (rows["status"] == "ok").all()
    assert rows["method_params"].iloc[0] == '{"weight": 0.1}'


def test_plugin_passes_the_conformance_checker(installed_plugin: None, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.check_method import main

    assert main(["mymethod"]) == 0
    assert "mymethod: 2 passed, 0 failed" in capsys.readouterr().out
