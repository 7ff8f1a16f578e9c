"""Training batches served from slices resident on the training device.

``DeviceBatches`` puts a ``SliceDataset``'s slices, labels and attached maps (float16 maps stay
float16) on the device once, as one tensor each. Per epoch it draws the batch order with the
same seeded ``torch.Generator`` and ``DataLoader`` sampler the host pipeline used, and the
augmentation parameters by replaying the dataset's own MONAI transforms' random draws in the
same order; it then augments on the device with batched tensor ops. Flips and 90-degree
rotations compose into one of 16 pixel permutations applied by a single ``gather``, and the
intensity scale and shift are the same float32 multiply and add MONAI does, so every batch is
bit-identical to the one ``DataLoader(SliceDataset)`` yields (tests/test_device_batches.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.slices import SliceDataset

__all__ = ["DeviceBatches", "dihedral_permutations"]


def dihedral_permutations(height: int, width: int) -> torch.Tensor:
    """(16, H*W) pixel indices: row ``8*flip_h + 4*flip_w + k`` is flip H, flip W, then rot90 by k.

    ``out.flatten()[j] = x.flatten()[perm[j]]`` reproduces MONAI's ``Flip(spatial_axis=0)``,
    ``Flip(spatial_axis=1)`` and ``Rotate90(k, spatial_axes=(0, 1))`` applied in that order.
    """
    rows = []
    for code in range(16):
        grid = torch.arange(height * width).view(height, width)
        if code & 8:
            grid = grid.flip(0)
        if code & 4:
            grid = grid.flip(1)
        rows.append(torch.rot90(grid, code & 3, (0, 1)).flatten())
    return torch.stack(rows)


class DeviceBatches:
    """A ``SliceDataset`` on ``device``, served as the host pipeline's training batches.

    ``epoch()`` yields batch dicts (image float32 (B, 1, H, W), label int64 (B, H, W), index
    int64 (B,), each attached map float32 (B, H, W)) on ``device``; ``generator`` is the CPU
    generator that orders the slices, as ``DataLoader(..., shuffle=True, generator=generator)``.
    Augmentation needs square slices (a rotation must keep the batch's shape).
    """

    def __init__(self, data: SliceDataset, batch_size: int, device: torch.device, generator: torch.Generator) -> None:
        slices = data.slices
        self.data, self.device = data, torch.device(device)
        self.images = torch.from_numpy(np.ascontiguousarray(slices.images, dtype=np.float32)).to(self.device)
        self.labels = torch.from_numpy(np.ascontiguousarray(slices.labels)).to(self.device)
        self.maps = {name: self._resident(maps) for name, maps in data.maps.items()}
        self.order = DataLoader(
            range(len(slices)),
            batch_size=batch_size,
            shuffle=True,
            generator=generator,
            drop_last=len(slices) >= batch_size,
        )
        height, width = slices.labels.shape[1:]
        if data.augment and height != width:
            raise ValueError(f"augmentation rotates slices by 90 degrees: they must be square, not {height}x{width}")
        self.perms = dihedral_permutations(height, width).to(self.device) if data.augment else None

    def _resident(self, maps: np.ndarray) -> torch.Tensor:
        dtype = np.float16 if maps.dtype == np.float16 else np.float32  # the host path serves float32 of these
        return torch.from_numpy(np.ascontiguousarray(maps, dtype=dtype)).to(self.device)

    def _draws(self, order: torch.Tensor) -> torch.Tensor:
        """(N, 5) float64 per slice of ``order``: permutation code, scale?, 1 + factor, shift?, offset.

        Calls the MONAI transforms' ``randomize`` exactly as their ``__call__`` does for each
        item, in the order the host pipeline fetched them, so the random streams stay in step.
        """
        flip_h, flip_w, rotate, scale, shift = self.data.transform.transforms
        out = np.zeros((len(order), 5))
        for row in out:
            flip_h.randomize(None)
            flip_w.randomize(None)
            rotate.randomize()
            row[0] = 8 * flip_h._do_transform + 4 * flip_w._do_transform + rotate._rand_k * rotate._do_transform
            scale.randomize(None)
            if scale._do_transform:
                scale.scaler.randomize(None)
                row[1], row[2] = 1, 1 + scale.scaler.factor  # ScaleIntensity: v * (1 + factor)
            shift.randomize(None)
            if shift._do_transform:
                shift.shifter.randomize(None)
                row[3], row[4] = 1, shift.shifter._offset  # ShiftIntensity: v + offset
        return torch.from_numpy(out)

    def epoch(self) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over the slices in the generator's order (the last short batch dropped, as before)."""
        batches = list(self.order)  # draws the order exactly as one DataLoader epoch does
        if not batches:
            return
        order = torch.cat(batches)
        sizes = [len(b) for b in batches]
        indices = order.to(self.device).split(sizes)
        draws = self._draws(order).to(self.device).split(sizes) if self.perms is not None else [None] * len(sizes)
        for index, draw in zip(indices, draws):
            yield self._batch(index, draw)

    def _batch(self, index: torch.Tensor, draw: torch.Tensor | None) -> dict[str, torch.Tensor]:
        image = self.images.index_select(0, index)
        spatial = {"label": self.labels.index_select(0, index)}
        spatial.update({name: maps.index_select(0, index) for name, maps in self.maps.items()})
        if draw is not None:
            perm = self.perms.index_select(0, draw[:, 0].long())  # (B, H*W)
            image = image.flatten(-2).gather(-1, perm[:, None]).view_as(image)
            spatial = {k: v.flatten(-2).gather(-1, perm).view_as(v) for k, v in spatial.items()}
            column = draw[:, None, None, None]
            image = torch.where(column[..., 1] > 0, image * column[..., 2].float(), image)
            image = torch.where(column[..., 3] > 0, image + column[..., 4].float(), image)
        batch = {"image": image, "label": spatial.pop("label").long(), "index": index}
        batch.update({name: maps.float() for name, maps in spatial.items()})
        return batch
