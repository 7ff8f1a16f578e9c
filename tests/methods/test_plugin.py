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


def install(root: Path, name: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]) -> None:
    """A distribution ``name`` on sys.path at ``root`` (what ``pip install`` leaves behind): package ``name`` holding
    ``modules`` (file name -> source), and ``entry_points`` (group -> {entry-point name: module})."""
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for file, source in modules.items():
        (package / file).write_text(source)
    info = root / f"{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines))


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the guide's package as a distribution on sys.path (what ``pip install`` leaves behind)."""
    import tomllib  # stdlib from Python 3.11 (imported here so import sorting is the same for any target)

    project = tomllib.loads(code_block("toml"))["project"]
    assert project["name"] == "mypkg"
    install(tmp_path, "mypkg", {"mymethod.py": code_block("python", "# mypkg/mymethod.py")}, project["entry-points"])
    monkeypatch.syspath_prepend(str(tmp_path))
    with METHODS.isolated():  # the plugin's registration is undone
        yield
    for name in ("mypkg.mymethod", "mypkg"):
        sys.modules.pop(name, None)


def test_plugin_is_listed_with_its_hyperparameters(installed_plugin: None) -> None:
    assert "mymethod" in METHODS.names()
    cls = METHODS.get("mymethod")
    assert cls.hparams["weight"].default == 0.05 and cls.hparams["weight"].help
    assert cls(weight="0.1").params["weight"] == 0.1  # a CLI string converted to the declared type
    with pytest.raises(MethodConfigError, match=r"^method 'mymethod': weight=-1\.0 not in \[0, inf\)$"):  # guide
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


@pytest.mark.slow
def test_plugin_runs_end_to_end_through_the_cli(
    installed_plugin: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from benchmarks.cli import main

    assert main(["--list-methods"]) == 0
    assert "mymethod" in capsys.readouterr().out
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [
        "--suite",
        "phantom",
        "--method",
        "mymethod",
        "--param",
        "mymethod.weight=0.1",
        "--steps",
        "2",
        "--few-shot",
        "1",
    ]
    assert main([*args, "--out", str(out), "--cache-dir", str(cache)]) == 0
    import pandas as pd

    rows = pd.concat(pd.read_parquet(p) for p in (out / "cells").glob("*.parquet"))
    assert set(rows["method"]) == {"mymethod"} and (rows["status"] == "ok").all()
    assert rows["method_params"].iloc[0] == '{"weight": 0.1}'


def test_plugin_passes_the_conformance_checker(installed_plugin: None, capsys: pytest.CaptureFixture) -> None:
    from benchmarks.check_method import main

    assert main(["mymethod"]) == 0
    assert "mymethod: 2 passed, 0 failed" in capsys.readouterr().out


GOOD_PLUGINS = {  # group -> (registry module, registry name, a module registering "zzz-good")
    "ntbench.methods": (
        "methods.base",
        "METHODS",
        "from methods import Method, register_method\n\n\n@register_method('zzz-good')\nclass Good(Method):\n"
        "    '''Plain fine-tuning.'''\n",
    ),
    "ntbench.backbones": (
        "benchmarks.backbones",
        "BACKBONES",
        "from benchmarks.backbones import BACKBONES\n\nBACKBONES.register('zzz-good')(lambda c, k: None)\n",
    ),
    "ntbench.datasets": (
        "datasets.base",
        "DATASETS",
        "from datasets.base import DATASETS\n\n\n@DATASETS.register('zzz-good')\nclass Good:\n    pass\n",
    ),
    "ntbench.estimators": (
        "methods.estimators.base",
        "ESTIMATORS",
        "from methods.estimators.base import ESTIMATORS\n\n\n@ESTIMATORS.register('zzz-good')\nclass Good:\n    pass\n",
    ),
}


@pytest.mark.parametrize("group", sorted(GOOD_PLUGINS))
def test_a_broken_plugin_is_named_and_the_others_still_load(
    group: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed entry point whose module fails to import is reported by name; the plugins after it load."""
    import importlib

    from datasets.core.registry import PluginWarning, UnknownNameError

    module, attr, good = GOOD_PLUGINS[group]
    registry = getattr(importlib.import_module(module), attr)
    modules = {"broken.py": "raise ImportError('needs libfoo')\n", "good.py": good}
    install(
        tmp_path, "fakeplugins", modules, {group: {"aaa-broken": "fakeplugins.broken", "zzz-good": "fakeplugins.good"}}
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with registry.isolated():
            with pytest.warns(
                PluginWarning, match=r"plugin 'aaa-broken' .*fakeplugins\.broken: ImportError: needs libfoo"
            ):
                names = registry.names()
            assert "zzz-good" in names and "aaa-broken" not in names
            assert registry.names() == names  # asked again: the same list, no error
            with pytest.raises(
                UnknownNameError, match=r"failed to load: aaa-broken \(fakeplugins\.broken: ImportError"
            ):
                registry.get("aaa-broken")
    finally:
        monkeypatch.undo()  # the fake distribution leaves sys.path
        for name in ("fakeplugins.good", "fakeplugins.broken", "fakeplugins"):
            sys.modules.pop(name, None)
    assert "zzz-good" not in registry.names()  # isolated() undid the registration


def test_temporarily_registers_for_the_block_only() -> None:
    from methods.base import Method

    class Plain(Method):
        """Plain fine-tuning."""

    with METHODS.temporarily("test-plain", Plain) as cls:
        assert METHODS.get("test-plain") is cls and cls.name == "test-plain"
        with pytest.raises(ValueError, match="already registered"):
            with METHODS.temporarily("test-plain", Plain):
                pass
    assert "test-plain" not in METHODS
