"""One-pass cost of each transferability estimator (methods.estimators.estimate) on the default suite's slice size.

Run: OMP_NUM_THREADS=1 python -m pytest tests/perf/test_estimators_perf.py --benchmark-only -q -s
150 slices of 64x64 (the default suite's target training sets hold 79-106; this is about one and a half of
them), a randomly initialised MONAI U-Net (``unet``, 16 feature channels; the cost does not depend on its
weights), batches of 32. Every time is re-measured in the same test in interleaved rounds (best of each) and
reported as a ratio to LEEP's and to one bare forward pass over the slices, never against fixed numbers.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from test_leep_perf import interleaved_min  # pytest puts this folder on sys.path (prepend import mode)
from torch.utils.data import DataLoader

from datasets.slices import SliceDataset, SliceSet
from methods.estimators import ESTIMATORS, estimate

N_SLICES, SIZE = 150, 64


def make_slices(seed: int = 0) -> SliceSet:
    """Slices with a disc of foreground (about 5% of the pixels) at a random place, noisy images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    labels = np.zeros((N_SLICES, SIZE, SIZE), np.uint8)
    for i, (cy, cx) in enumerate(rng.integers(12, SIZE - 12, (N_SLICES, 2))):
        labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 1
    images = (labels[:, None] + rng.normal(0, 0.5, (N_SLICES, 1, SIZE, SIZE))).astype(np.float32)
    return SliceSet.of_volume(images, labels)


def test_estimators_one_pass(benchmark):
    from benchmarks.backbones import build_backbone

    torch.manual_seed(0)
    model, slices = build_backbone("unet", 1, 2).eval(), make_slices()
    names = ESTIMATORS.names()
    loader = DataLoader(SliceDataset(slices), batch_size=32)

    @torch.inference_mode()
    def forward() -> None:
        for batch in loader:
            model(batch["image"])

    runs = {"forward": forward}
    runs |= {name: (lambda name=name: estimate(model, slices, [name])) for name in names}
    runs["all"] = lambda: estimate(model, slices, names)
    runs["all but leep"] = lambda: estimate(model, slices, [n for n in names if n != "leep"])
    start = time.perf_counter()
    best = dict(zip(runs, interleaved_min(list(runs.values()), rounds=3)))
    benchmark.pedantic(runs["all"], rounds=3, warmup_rounds=0)
    leep, forward_s = best["leep"], best["forward"]
    share = (best["all"] - best["all but leep"]) / best["all"]  # what LEEP adds to the one pass of all estimators
    info = {f"{name}_ms": t * 1e3 for name, t in best.items()}
    info |= {f"{name}_over_leep": t / leep for name, t in best.items()}
    info |= {"leep_share_of_all": share, "measure_s": time.perf_counter() - start}
    benchmark.extra_info.update(info)
    print(f"\n[estimators] {N_SLICES} slices of {SIZE}x{SIZE}, unet, batch 32, best of 3 interleaved rounds:")
    for name, t in best.items():
        print(f"  {name:18s} {t * 1e3:8.1f} ms  {t / leep:5.2f}x leep  {t / forward_s:5.2f}x one forward pass")
    print(f"  leep's share of the one pass of all {len(names)} estimators: {share:.0%}")
    assert best["all"] < sum(best[name] for name in names)  # one pass, not one per estimator
