"""Every built-in suite loads, names only registered methods and backbones, and is named after its file; the
default suite's fine-tuning budget is what the README and docs/design.md §Testbed pre-registered, and the suites
that build on it (nt-dial-ft, default-tuned) repeat it: suite files have no inheritance, so this test is the guard."""

from __future__ import annotations

import pytest

from benchmarks.backbones import BACKBONES
from benchmarks.suite import SUITES_DIR, load_suite, suite_names
from methods import METHODS


@pytest.mark.parametrize("name", suite_names())
def test_built_in_suite_loads(name: str) -> None:
    suite = load_suite(name)
    assert suite.name == name and (SUITES_DIR / f"{name}.yaml").exists()
    assert suite.transfers and suite.seeds
    assert set(suite.methods) <= set(METHODS.names()) and suite.backbone in BACKBONES.names()


def test_default_suite_is_the_preregistered_fine_tuning_budget() -> None:
    suite = load_suite("default")
    assert suite.dataset == "brainsim" and suite.methods == ["finetune", "scratch", "trm"]
    assert suite.transfers == [("*-flair-WT", "*-cc0-WT"), ("*-flair-WT", "*-cc100-WT")]
    assert suite.seeds == [0, 1, 2, 3, 4] and suite.source_seed == 0 and suite.few_shot == [3]
    b = suite.budget
    assert (b.source_steps, b.lr, b.target_steps, b.target_lr) == (1500, 3e-3, 200, 5e-5)
    for name in ("nt-dial-ft", "default-tuned"):  # the dose-response and the tuned check copy the default's setup
        other = load_suite(name)
        assert other.budget == b and other.source_seed == suite.source_seed and other.seeds == suite.seeds
        assert set(other.transfers) <= {(s, f"*-cc{p}-WT") for s, _ in suite.transfers for p in (0, 25, 50, 75, 100)}
