"""Simulated stores with a known effect and known variance components, and the calibration they give.

``python -m leaderboard.simulate [--stores 10000]`` prints the coverage / type-I error / power table of
``docs/statistics.md``; with ``--equivalence`` the rate of the ``equivalent`` verdict (TOST) instead. The
calibration tests (tests/leaderboard/test_calibration.py, test_equivalence.py) run smaller ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.core.options import DEFAULT_MARGIN
from benchmarks.core.schema import SETTING_SCHEMA
from leaderboard.stats import crossed_interval, tost, verdicts


@dataclass(frozen=True)
class Components:
    """Standard deviations of the parts of a paired difference (method - control) in one store."""

    seed: float  # per (transfer, seed): one trained model pair; seed numbers of two transfers are unrelated
    subject: float  # per test subject, shared by every transfer, target task and region that scores it
    seed_subject: float  # per (transfer, seed, subject)
    region: float  # per (subject, region), the same for every seed
    transfer: float  # fixed offset per transfer, centred: the estimand is the mean over the store's transfers
    noise: float  # per (transfer, seed, subject, region)


REGIMES = {
    "seed-dominant": Components(seed=0.05, subject=0.01, seed_subject=0.01, region=0.005, transfer=0.02, noise=0.01),
    "subject-dominant": Components(seed=0.005, subject=0.05, seed_subject=0.01, region=0.01, transfer=0.02, noise=0.01),
}
SEEDS = (3, 5, 10)
SUBJECTS = (2, 8, 30)
# (seeds, test subjects) of the equivalence table in docs/statistics.md.
EQUIVALENCE_DESIGNS = ((3, 8), (3, 24), (5, 8), (5, 24), (10, 24), (10, 60))
CHUNK = 2500  # stores simulated at once (memory: a 10 x 60 design holds 24,000 values per store)


def simulate_differences(
    rng: np.random.Generator,
    n_stores: int,
    n_seeds: int,
    n_subjects: int,
    components: Components,
    effect: float = 0.0,
    n_transfers: int = 2,
    n_regions: int = 2,
) -> np.ndarray:
    """Paired differences, shape (store, transfer, seed, subject, region); every transfer scores every subject."""
    c, shape = components, (n_stores, n_transfers, n_seeds, n_subjects, n_regions)
    offsets = rng.normal(0, c.transfer, (n_stores, n_transfers, 1, 1, 1))
    return (
        effect
        + offsets
        - offsets.mean(axis=1, keepdims=True)
        + rng.normal(0, c.seed, (n_stores, n_transfers, n_seeds, 1, 1))
        + rng.normal(0, c.subject, (n_stores, 1, 1, n_subjects, 1))
        + rng.normal(0, c.seed_subject, (n_stores, n_transfers, n_seeds, n_subjects, 1))
        + rng.normal(0, c.region, (n_stores, 1, 1, n_subjects, n_regions))
        + rng.normal(0, c.noise, shape)
    )


def unit_grids(differences: np.ndarray) -> np.ndarray:
    """Average each subject's transfers and regions within each seed: (store, seed, subject)."""
    return differences.mean(axis=(1, 4))


def simulate_store(
    rng: np.random.Generator,
    n_seeds: int,
    n_subjects: int,
    components: Components,
    effect: float = 0.0,
    n_transfers: int = 2,
    n_regions: int = 2,
    method: str = "trm",
    control: str = "finetune",
) -> pd.DataFrame:
    """One store in the runner's long format (as ``load_store`` returns it) for ``method`` and ``control``.

    Transfer t goes from ``src{t}`` to target task ``task{t}``; every target task scores the same
    subjects ``sub-000``... in regions ``r0``...; the control's Dice is 0.7 plus seed and subject
    effects, the method's is the control's plus the simulated difference.
    """
    diff = simulate_differences(rng, 1, n_seeds, n_subjects, components, effect, n_transfers, n_regions)[0]
    base = (
        0.7
        + rng.normal(0, 0.03, (n_transfers, n_seeds, 1, 1))
        + rng.normal(0, 0.05, (1, 1, n_subjects, 1))
        + rng.normal(0, 0.02, diff.shape)
    )
    t, s, j, r = np.meshgrid(*(np.arange(n) for n in diff.shape), indexing="ij")
    frames = []
    for name, values in ((control, base), (method, base + diff)):
        frames.append(
            pd.DataFrame(
                {
                    "method": name,
                    "variant": name,
                    "transfer": [f"src{i}->task{i}" for i in t.ravel()],
                    "source_task": [f"src{i}" for i in t.ravel()],
                    "target_task": [f"task{i}" for i in t.ravel()],
                    "seed": s.ravel(),
                    "subject_id": [f"sub-{i:03d}" for i in j.ravel()],
                    "region": [f"r{i}" for i in r.ravel()],
                    "dice": values.ravel(),
                }
            )
        )
    rows = pd.concat(frames, ignore_index=True)
    keys = rows[["method", "transfer", "seed"]].astype(str).agg("/".join, axis=1)
    return rows.assign(
        cell_key=[hashlib.sha1(k.encode()).hexdigest()[:16] for k in keys],
        suite="simulated",
        dataset="simulated",
        transfer_type="cross-task",
        method_params=json.dumps({}),
        backbone="none",
        few_shot=0,
        target_steps=100,
        hd95=np.nan,
        status="ok",
        error="",
        split="test",
        trial=-1,
        tuned_trials=0,
        **{c: pd.NA for c in SETTING_SCHEMA},
    )


def calibration(
    n_stores: int,
    *,
    effect: float = 0.03,
    alpha: float = 0.05,
    rng_seed: int = 0,
    regimes: dict[str, Components] = REGIMES,
    seeds: tuple[int, ...] = SEEDS,
    subjects: tuple[int, ...] = SUBJECTS,
) -> pd.DataFrame:
    """Coverage and type-I error (no true difference) and power (true difference ``effect``) per cell."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for regime, components in regimes.items():
        for n_seeds in seeds:
            for n_subjects in subjects:
                null = crossed_interval(
                    unit_grids(simulate_differences(rng, n_stores, n_seeds, n_subjects, components)), alpha
                )
                alt = crossed_interval(
                    unit_grids(simulate_differences(rng, n_stores, n_seeds, n_subjects, components, effect)), alpha
                )
                covered = (null.ci_low <= 0) & (0 <= null.ci_high)
                covered_alt = (alt.ci_low <= effect) & (effect <= alt.ci_high)
                rows.append(
                    {
                        "regime": regime,
                        "seeds": n_seeds,
                        "subjects": n_subjects,
                        "coverage": float(np.mean(np.r_[covered, covered_alt])),
                        "type1": float(np.mean(null.p_value < alpha)),
                        "power": float(np.mean(alt.p_value < alpha)),
                    }
                )
    return pd.DataFrame(rows)


def equivalent_rate(
    rng: np.random.Generator,
    n_stores: int,
    n_seeds: int,
    n_subjects: int,
    components: Components,
    effect: float,
    margin: float,
    alpha: float = 0.05,
) -> float:
    """Share of simulated stores whose one comparison gets the verdict ``equivalent`` (``stats.verdicts``).

    One row per store, so Holm leaves both p-values as they are (a family of one).
    """
    hits = 0
    for start in range(0, n_stores, CHUNK):
        n = min(CHUNK, n_stores - start)
        est = crossed_interval(unit_grids(simulate_differences(rng, n, n_seeds, n_subjects, components, effect)), alpha)
        eq = tost(est, margin, alpha)
        words = verdicts(est.mean, est.p_value, n_seeds, alpha, True, ("worse", "better"), eq.p_value)
        hits += int(np.sum(words == "equivalent"))
    return hits / n_stores


def equivalence_calibration(
    n_stores: int,
    *,
    margins: tuple[float, ...] = (DEFAULT_MARGIN,),
    alpha: float = 0.05,
    rng_seed: int = 0,
    regimes: dict[str, Components] = REGIMES,
    designs: tuple[tuple[int, int], ...] = EQUIVALENCE_DESIGNS,
) -> pd.DataFrame:
    """Per regime, design and margin: the ``equivalent`` rate at no true difference (``power``) and at a
    true difference of -margin and +margin (``size_low``, ``size_high``: TOST's size, at most alpha)."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for regime, components in regimes.items():
        for n_seeds, n_subjects in designs:
            for margin in margins:
                rate = {
                    effect: equivalent_rate(rng, n_stores, n_seeds, n_subjects, components, effect, margin, alpha)
                    for effect in (0.0, -margin, margin)
                }
                rows.append(
                    {
                        "regime": regime,
                        "seeds": n_seeds,
                        "subjects": n_subjects,
                        "margin": margin,
                        "power": rate[0.0],
                        "size_low": rate[-margin],
                        "size_high": rate[margin],
                    }
                )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    """Print the calibration table (or with ``--equivalence`` the equivalence table) as Markdown."""
    p = argparse.ArgumentParser(prog="python -m leaderboard.simulate", description=__doc__)
    p.add_argument("--stores", type=int, default=10000, help="simulated stores per cell and hypothesis")
    p.add_argument("--effect", type=float, default=0.03, help="true difference for the power column")
    p.add_argument(
        "--equivalence",
        type=float,
        nargs="+",
        metavar="MARGIN",
        help="instead: how often the verdict is 'equivalent' at a true difference of 0 and of -+MARGIN (Dice)",
    )
    args = p.parse_args(argv)
    if args.equivalence:
        table = equivalence_calibration(args.stores, margins=tuple(args.equivalence))
        print(f"{args.stores} stores per cell; share of 'equivalent' verdicts (TOST, alpha = 0.05)\n")
        print("| regime | seeds | subjects | margin | at Δ = 0 (power) | at Δ = −margin | at Δ = +margin |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in table.itertuples():
            print(
                f"| {r.regime} | {r.seeds} | {r.subjects} | {r.margin:g} | {r.power:.3f} | {r.size_low:.3f} "
                f"| {r.size_high:.3f} |"
            )
        return
    table = calibration(args.stores, effect=args.effect)
    print(f"{args.stores} stores per cell; power at a true difference of {args.effect:g}\n")
    print("| regime | seeds | subjects | coverage | type-I error | power |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in table.itertuples():
        print(f"| {r.regime} | {r.seeds} | {r.subjects} | {r.coverage:.3f} | {r.type1:.3f} | {r.power:.3f} |")


if __name__ == "__main__":
    main()
