"""Device-resident batches: bit-identical to DataLoader(SliceDataset) batches, epoch after epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from datasets.device_batches import DeviceBatches, dihedral_permutations
from datasets.slices import SliceDataset, SliceSet

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"))]


def _slices(n: int, h: int, w: int, seed: int) -> SliceSet:
    rng = np.random.default_rng(seed)
    return SliceSet.of_volume(
        rng.normal(size=(n, 1, h, w)).astype(np.float32), rng.integers(0, 4, (n, h, w)).astype(np.uint8)
    )


def _pair(n: int, batch: int, augment: bool, seed: int, device: str, h: int = 12) -> tuple[list, list]:
    """(host batches, device batches) of 3 epochs, each from a fresh dataset and generator."""
    out = []
    for kind in ("host", "device"):
        data = SliceDataset(_slices(n, h, h, seed), augment=augment, seed=seed)
        rng = np.random.default_rng(seed + 1)
        data.attach("weight", (1 + rng.random((n, h, h))).astype(np.float16))  # TRM's map: float16
        data.attach("raw", rng.normal(size=(n, h, h)).astype(np.float32))
        gen = torch.Generator().manual_seed(seed)
        if kind == "host":
            loader = DataLoader(data, batch_size=batch, shuffle=True, generator=gen, drop_last=n >= batch)
            out.append([b for _ in range(3) for b in loader])
        else:
            batches = DeviceBatches(data, batch, torch.device(device), gen)
            out.append([{k: v.cpu() for k, v in b.items()} for _ in range(3) for b in batches.epoch()])
    return out[0], out[1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    ("n", "batch", "augment", "seed"), [(37, 8, True, 0), (37, 8, True, 5), (5, 8, True, 2), (20, 4, False, 1)]
)
def test_bit_identical_to_host_pipeline(n: int, batch: int, augment: bool, seed: int, device: str) -> None:
    host, dev = _pair(n, batch, augment, seed, device)
    assert len(host) == len(dev) > 0
    for a, b in zip(host, dev):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert torch.equal(a[key], b[key]), key  # bitwise: same slices, permutations and float32 ops


def test_augmentation_happens_and_moves_maps_with_labels() -> None:
    data = SliceDataset(_slices(64, 10, 10, 0), augment=True, seed=0)
    data.attach("copy", data.slices.labels.astype(np.float16))
    batches = list(DeviceBatches(data, 16, torch.device("cpu"), torch.Generator().manual_seed(0)).epoch())
    moved = scaled = 0
    for b in batches:
        assert torch.equal(b["copy"], b["label"].float())
        original = torch.from_numpy(data.slices.labels)[b["index"]].long()
        moved += int((b["label"] != original).flatten(1).any(1).sum())
        raw = torch.from_numpy(data.slices.images)[b["index"]]
        scaled += int((b["image"].flatten(1).sort(1).values != raw.flatten(1).sort(1).values).any(1).sum())
    assert moved > 64 // 2 and scaled > 64 // 2  # P(no spatial change) = 1/8, P(no intensity change) = 1/4


def test_permutations_are_the_dihedral_group() -> None:
    perms = dihedral_permutations(5, 5)
    grid = torch.arange(25).view(5, 5)
    assert torch.equal(perms[0], grid.flatten())
    assert torch.equal(perms[8 + 4 + 2], grid.flip(0).flip(1).rot90(2).flatten())
    assert len({tuple(p.tolist()) for p in perms}) == 8  # 16 codes, the 8 symmetries of the square


def test_augmenting_non_square_slices_is_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        DeviceBatches(SliceDataset(_slices(4, 6, 8, 0), augment=True), 2, torch.device("cpu"), torch.Generator())
    plain = DeviceBatches(SliceDataset(_slices(4, 6, 8, 0)), 2, torch.device("cpu"), torch.Generator())
    assert next(plain.epoch())["image"].shape == (2, 1, 6, 8)
