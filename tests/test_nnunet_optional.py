"""The nnU-Net extra is optional: the core imports without it, and ``--backbone nnunet`` says how to install it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.backbones import build_backbone
from methods.model import BackboneError


@pytest.fixture
def without_nnunet(monkeypatch: pytest.MonkeyPatch) -> None:
    """Imports of the extra's packages fail, as on a core install."""
    for name in ("nnunetv2", "dynamic_network_architectures"):
        monkeypatch.setitem(sys.modules, name, None)


@pytest.mark.slow
def test_core_modules_do_not_import_the_extra() -> None:
    code = (
        "import sys, benchmarks.cell, benchmarks.cli, benchmarks.interop.import_predictions, "
        "benchmarks.interop.export_nnunet; "
        "sys.exit(int(any(m in sys.modules for m in ('nnunetv2', 'dynamic_network_architectures'))))"
    )
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=300).returncode == 0


def test_nnunet_backbone_without_the_extra_is_a_one_line_error(without_nnunet: None) -> None:
    with pytest.raises(BackboneError, match=r"--backbone nnunet: needs the nnunet extra \(pip install"):
        build_backbone("nnunet", 1, 2)


def test_cli_without_the_extra_exit_2(without_nnunet: None, tmp_path: Path, capsys, phantom_dir: Path) -> None:
    from benchmarks.cli import main

    args = ["--suite", "phantom", "--data-root", str(phantom_dir), "--source", "t2-WT", "--target", "t1-WT"]
    args += ["--backbone", "nnunet", "--steps", "1", "--method", "finetune", "--out", str(tmp_path / "out")]
    assert main([*args, "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert "ntbench[nnunet]" in err and len(err.splitlines()) == 1
    assert not list(tmp_path.glob("out/cells/*.parquet"))
