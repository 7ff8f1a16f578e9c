"""``python -m benchmarks.riskmap``: a figure like Fig. 2 of Duan et al. (ICASSP 2025) for one transfer.

Columns: target image, ground truth, risk map R = 1 - e of the frozen source model, and
risk map of the fine-tuned model (the same pixel-LEEP construction with the fine-tuned
network in place of the source), for the test slices with the most foreground.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from benchmarks.cell import fine_tune  # noqa: E402
from benchmarks.config import Cell  # noqa: E402
from benchmarks.data import OpenDataset, open_dataset  # noqa: E402
from benchmarks.run import DEFAULT_CACHE, cell_identity, resolve_device  # noqa: E402
from benchmarks.suite import SuiteError, load_suite  # noqa: E402
from datasets.base import DataError  # noqa: E402
from datasets.registry import UnknownNameError  # noqa: E402
from datasets.slices import SliceDataset, SliceSet  # noqa: E402
from methods.transferability import compute_joint, compute_risk_maps, leep_conditional  # noqa: E402


def risk_of(
    model: torch.nn.Module, train_set: SliceSet, shown: SliceSet, num_classes: int, device: torch.device
) -> tuple[np.ndarray, float]:
    """R = 1 - e on ``shown`` slices, with P(y|z) estimated on the target training slices."""
    model.to(device).eval()
    fit = DataLoader(SliceDataset(train_set), batch_size=32)
    joint, _ = compute_joint(model, fit, num_classes, device)
    maps, leep = compute_risk_maps(
        model,
        DataLoader(SliceDataset(shown), batch_size=32),
        leep_conditional(joint),
        "complement",
        "linear",
        1.0,
        device=device,
    )
    return maps.astype(np.float32) - 1.0, leep  # W = 1 + R with alpha = 1


def figure(cell: Cell, data: OpenDataset, cache_dir: Path, device: torch.device, n_slices: int, out: Path) -> Path:
    """Fine-tune ``cell`` with plain fine-tuning (the same training as its cell) and draw the figure."""
    task = data.task(cell.target_task)
    train_set = data.slices(task, data.train_ids(task, cell.few_shot, cell.seed))
    test_ids = data.task_ids(task, "test")
    if not test_ids:
        raise DataError(f"task {task}: no test subjects")
    test = data.slices(task, test_ids)
    pick = np.sort(np.argsort((test.labels > 0).reshape(len(test), -1).sum(1))[::-1][:n_slices])
    shown = SliceSet(
        test.images[pick],
        test.labels[pick],
        test.subject_index[pick],
        test.z[pick],
        test.subject_ids,
        test.volume_shape,
        test.spacing,
    )
    tuned, source, _ = fine_tune(replace(cell, method="finetune", method_params={}), data, cache_dir, device)
    r_src, leep_src = risk_of(source, train_set, shown, task.num_classes, device)
    r_ft, leep_ft = risk_of(tuned, train_set, shown, task.num_classes, device)

    fig, axes = plt.subplots(len(pick), 4, figsize=(8.6, 2.2 * len(pick) + 0.6), squeeze=False, layout="constrained")
    titles = [
        "target image",
        "ground truth",
        f"risk, source model\n(LEEP {leep_src:.3f})",
        f"risk, fine-tuned\n(LEEP {leep_ft:.3f})",
    ]
    for row in range(len(pick)):
        panels = [
            (shown.images[row, 0], "gray", None),
            (shown.labels[row], "viridis", (0, task.num_classes - 1)),
            (r_src[row], "magma", (0, 1)),
            (r_ft[row], "magma", (0, 1)),
        ]
        for col, (img, cmap, lim) in enumerate(panels):
            ax = axes[row, col]
            im = ax.imshow(
                img.T, cmap=cmap, origin="lower", vmin=lim and lim[0], vmax=lim and lim[1], interpolation="nearest"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if col >= 2:  # ground-truth outline over the risk maps
                ax.contour(shown.labels[row].T > 0, levels=[0.5], colors="cyan", linewidths=0.6, origin="lower")
            if row == 0:
                ax.set_title(titles[col], fontsize=9)
        sid = shown.subject_ids[shown.subject_index[row]]
        axes[row, 0].set_ylabel(f"{sid}\nz={shown.z[row]}", fontsize=7)
    fig.colorbar(im, ax=axes[:, 3].tolist(), shrink=0.5, label="risk R = 1 - e (cyan: ground truth)")
    fig.suptitle(
        f"{cell.transfer} ({cell.dataset}, seed {cell.seed}, {cell.budget.target_steps} target steps)", fontsize=10
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.riskmap", description=__doc__)
    p.add_argument("--suite", default="default", help="suite giving dataset and budget (default: default)")
    p.add_argument("--source", help="source task (default: the suite's first transfer)")
    p.add_argument("--target", help="target task (default: the suite's first transfer)")
    p.add_argument("--data-root", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--few-shot", type=int, default=None, help="K target training subjects (default: the suite's)")
    p.add_argument("--steps", type=int, help="override the training budgets")
    p.add_argument("--slices", type=int, default=4, help="test slices shown (default 4)")
    p.add_argument("--out", type=Path, default=Path("riskmap.png"))
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    try:
        suite = load_suite(args.suite)
        source, target = suite.transfers[0]
        budget = (
            suite.budget
            if args.steps is None
            else replace(suite.budget, source_steps=args.steps, target_steps=args.steps)
        )
        cell = Cell(
            suite=suite.name,
            dataset=suite.dataset,
            source_task=args.source or source,
            target_task=args.target or target,
            method="finetune",
            backbone=suite.backbone,
            seed=args.seed,
            few_shot=suite.few_shot[0] if args.few_shot is None else args.few_shot,
            budget=budget,
            dataset_options=suite.dataset_options,
            split_seed=suite.split_seed,
        )
        device = resolve_device(args.device)
        data = open_dataset(
            suite.dataset, args.data_root, suite.dataset_options, args.cache_dir, budget.size, suite.split_seed
        )
        data.task(cell.source_task)
        cell = replace(cell, **cell_identity(data, None))  # the same source model as the run's cells
        path = figure(cell, data, args.cache_dir, device, args.slices, args.out)
    except (SuiteError, DataError, UnknownNameError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
