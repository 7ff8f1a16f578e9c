"""The static page: self-contained, every table present, and rendered by headless Chromium."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
TABLE_IDS = (
    "methods",
    "leaderboard-1",
    "comparisons-1",
    "negative-transfer-1",
    "power-1",
    "leaderboard-2",
    "power-2",
    "transferability",
    "kendall",
    "failed",
    "missing",
)


def test_page_is_self_contained_with_every_table(default_build: Path) -> None:
    html = (default_build / "index.html").read_text()
    for table_id in TABLE_IDS:
        assert f'<table id="{table_id}">' in html, table_id
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', html)
    assert len(sources) == 2  # a CD diagram per setting (Iman-Davenport rejects, 6 units); one K: no curve
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"(src|href)=\"(https?:|//)", html) and "<link" not in html and "<script" not in html
    for text in (
        "Setting 2: iseg · monai-unet · K=all · 300 steps",
        "Covers datasets fets, iseg",
        "Power to detect a true mean difference of 0.02",
        "CUDA out of memory",
        "3f2a9c1",
        "2.5.1+cu121",
        "NVIDIA H100",
        "2025-03-01",
    ):
        assert text in html


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium binary; the test skips without one (``.ci/run`` installs it where it can)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("no chromium on PATH to render the page (apt-get install chromium)")
    return found


def test_page_renders_in_headless_chromium(default_build: Path, chromium: str, tmp_path: Path) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    shot = ARTIFACTS / "leaderboard_index.png"
    shot.unlink(missing_ok=True)
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        (default_build / "index.html").resolve().as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    assert shot.stat().st_size > 50_000
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels[..., :3].std() > 0.05  # not a blank page
