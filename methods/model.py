"""The model every method works on: a body with declared structure and a swappable 1x1 head (``SegModel``).

Backbones (``benchmarks.backbones``, the nnU-Net network in ``benchmarks.interop.nnunet``) build it; methods find
their layers through its declared names. Building or loading one can raise ``BackboneError``/``CheckpointError``.
"""

from __future__ import annotations

import torch
from torch import nn


class SegModel(nn.Module):
    """A body that outputs ``features`` channels at input resolution + a 1x1 conv head.

    Qualified module names declare the structure: ``encoder`` covers every
    down-path parameter; ``encoder_stages`` are the stage outputs to hook, shallow
    to deep (the last is the bottleneck); everything else in the body is decoder.
    Methods find their layers through these names, never hard-coded layer names.
    """

    def __init__(
        self,
        body: nn.Module,
        features: int,
        num_classes: int,
        encoder: list[str],
        encoder_stages: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.body = body
        self.features = features
        self.head = nn.Conv2d(features, num_classes, kernel_size=1)
        self.encoder = [f"body.{n}" for n in encoder]
        self.encoder_stages = [f"body.{n}" for n in (encoder_stages or encoder)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))

    @property
    def num_classes(self) -> int:
        return self.head.out_channels

    def reset_head(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one (used when class counts differ)."""
        self.head = nn.Conv2d(self.features, num_classes, kernel_size=1).to(self.head.weight.device)

    def modules_named(self, names: list[str]) -> list[nn.Module]:
        return [self.get_submodule(n) for n in names]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.modules_named(self.encoder) for p in m.parameters()]


class BackboneError(ValueError):
    """A backbone cannot be built as asked (a missing optional dependency, an unusable checkpoint)."""


class CheckpointError(BackboneError):
    """A --checkpoint file cannot initialise the chosen backbone."""
