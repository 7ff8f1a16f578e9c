"""One streaming pass of a frozen source model over the target training slices, gathering the ``Evidence``
every requested estimator reads (docs/design.md §Transferability estimators).

Pass 1 accumulates the LEEP joint, the hard-prediction counts (globally and per window) and a seeded,
class-balanced sample of the per-pixel features before the head; pass 2, only for LEEP (its log e needs
the finished joint), sums log e. Memory does not grow with the number of slices: the accumulators have
fixed shapes and the feature sample keeps at most ``per_class`` pixels of each class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from methods import leep_kernels as K
from methods import transferability as T
from methods.estimators.base import EVIDENCE, Evidence
from methods.leep_driver import LabelRange, batches

# Pixels per target class in the feature sample. Doubling it moves no feature-based score by more than the
# tolerances of tests/test_estimators_sampling.py (measured there; docs/design.md §Transferability estimators).
PER_CLASS = 4000

_MASK64 = (1 << 64) - 1


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


# SplitMix64 (Steele, Lea & Flood, OOPSLA 2014, "Fast splittable pseudorandom number generators", fig. 16)
_GAMMA, _MIX1, _MIX2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shift(z: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 ``z`` (torch's ``>>`` is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def pixel_keys(index: Tensor, pixels: int, seed: int) -> Tensor:
    """(B, pixels) float64 keys, uniform in [0, 1), of every pixel of slices ``index`` (B,): SplitMix64 of
    (seed, slice index, pixel), so a sample drawn by key is the same whatever the batching, order or device."""
    z = index.long().view(-1, 1) * pixels + torch.arange(pixels, device=index.device)
    z = z + _signed((seed + 1) * _GAMMA)  # int64 arithmetic wraps around, as SplitMix64's uint64 does
    z = (z ^ _shift(z, 30)) * _MIX1
    z = (z ^ _shift(z, 27)) * _MIX2
    z = z ^ _shift(z, 31)
    return _shift(z, 11).double() * 2.0**-53


class BalancedSample:
    """Per target class, the ``per_class`` pixels with the smallest ``pixel_keys``: a seeded uniform draw
    without replacement from the class's pixels (all of them when it has fewer), kept in fixed-size buffers;
    ``result`` keeps as many of every class present, so the sample's class prior is uniform."""

    def __init__(self, num_classes: int, per_class: int, seed: int) -> None:
        if not isinstance(per_class, int) or isinstance(per_class, bool) or per_class < 1:
            raise ValueError(f"per_class must be a positive int, got {per_class!r}")
        self.num_classes, self.per_class, self.seed = num_classes, per_class, seed
        self.keys: Tensor | None = None  # (C, per_class) float64, inf = empty slot
        self.feats: Tensor | None = None  # (C, per_class, D)

    def add(self, feats: Tensor, labels: Tensor, index: Tensor) -> None:
        """Offer every pixel of a batch: features (B, D, *spatial), labels (B, *spatial), slice indices (B,)."""
        b, d = feats.shape[:2]
        flat = feats.reshape(b, d, -1).transpose(1, 2).reshape(-1, d)  # (B*P, D)
        lab = labels.reshape(-1)
        cap, classes = self.per_class, torch.arange(self.num_classes, device=lab.device)
        if self.keys is None or self.feats is None:
            self.keys = torch.full((self.num_classes, cap), torch.inf, dtype=torch.float64, device=lab.device)
            self.feats = torch.zeros(self.num_classes, cap, d, dtype=flat.dtype, device=flat.device)
        keys = pixel_keys(index.to(lab.device), lab.numel() // b, self.seed).view(-1)
        offered = torch.where(lab.view(1, -1) == classes.view(-1, 1), keys.view(1, -1), torch.inf)  # (C, B*P)
        kept, pos = torch.topk(torch.cat([self.keys, offered], 1), cap, dim=1, largest=False)
        old = self.feats.reshape(-1, d)[(classes.view(-1, 1) * cap + pos).clamp(max=self.num_classes * cap - 1)]
        new = flat[(pos - cap).clamp(min=0)]
        self.feats = torch.where((pos < cap).unsqueeze(-1), old, new)
        self.keys = kept

    def result(self) -> tuple[Tensor, Tensor]:
        """(features (n, D) float64, labels (n,) int64) of the sample, class by class in key order: the same
        number of pixels of every class present, min(per_class, the rarest present class's pixel count)."""
        if self.keys is None or self.feats is None:
            raise ValueError("the feature sample saw no pixels")
        filled = torch.isfinite(self.keys)
        sizes = filled.sum(1)
        equal = sizes[sizes > 0].min()  # keys are sorted: each class's first `equal` are a uniform draw
        filled &= torch.arange(self.per_class, device=filled.device) < equal
        labels = torch.arange(self.num_classes, device=filled.device).view(-1, 1).expand_as(filled)
        return self.feats[filled].double(), labels[filled]


def _add(total: Tensor | None, part: Tensor) -> Tensor:
    return part if total is None else total + part


class Gatherer:
    """Accumulates the ``Evidence`` named in ``needs`` batch by batch: ``first`` for pass 1, then, when a
    log-e sum is needed (``second_pass``), ``second`` over the same slices."""

    def __init__(
        self,
        needs: Iterable[str],
        num_classes: int,
        *,
        stride: int | None = None,
        per_class: int = PER_CLASS,
        seed: int = 0,
    ) -> None:
        self.needs = set(needs)
        unknown = sorted(self.needs - set(EVIDENCE))
        if unknown:
            raise ValueError(f"unknown evidence {unknown}; valid: {', '.join(EVIDENCE)}")
        self.needs |= {"joint"} if "log_e" in self.needs else set()  # log e needs the finished joint
        self.needs |= {"window_joint"} if "window_log_e" in self.needs else set()
        if stride is None and any(n.startswith("window_") for n in self.needs):
            raise ValueError("location maps need a stride")
        self.stride = stride
        self.evidence = Evidence(num_classes)
        self.sample = BalancedSample(num_classes, per_class, seed) if "features" in self.needs else None
        self._cond: Tensor | None = None
        self._window_cond: Tensor | None = None

    @property
    def second_pass(self) -> bool:
        return bool({"log_e", "window_log_e"} & self.needs)

    def first(self, probs: Tensor, labels: Tensor, feats: Tensor | None = None, index: Tensor | None = None) -> None:
        """Pass 1 on one batch: probs (B, K, *spatial) softmax, labels (B, *spatial), features (B, D, *spatial)
        and slice indices (B,) for the feature sample. Values are not validated (the caller checks labels)."""
        ev, needs, c = self.evidence, self.needs, self.evidence.num_classes
        x, lab = K.flat(probs, labels)
        ev.pixels += lab.numel()
        if "joint" in needs:  # docs/design.md §TRM: J[y, z] = sum_p theta_p[z] [y_p = y]
            ev.joint = _add(ev.joint, K.joint(x, lab, c, False))
        if "counts" in needs:
            ev.counts = _add(ev.counts, T.nce_counts(K.hard(x), lab, x.shape[1], c, validate=False))
        if "window_joint" in needs:
            ev.window_joint = _add(ev.window_joint, T.location_joint(probs, labels, c, self.stride, validate=False))
        if "window_counts" in needs:
            part = T.location_counts(K.hard(probs), labels, probs.shape[1], c, self.stride, validate=False)
            ev.window_counts = _add(ev.window_counts, part)
        if self.stride is not None:
            ev.window_pixels += labels.shape[0] * self.stride * self.stride
        if self.sample is not None:
            if feats is None or index is None:
                raise ValueError("the feature sample needs features and slice indices")
            self.sample.add(feats, labels, index)

    def second(self, probs: Tensor, labels: Tensor) -> None:
        """Pass 2 on one batch: sums of log max(e, EPS), globally and per window, from pass 1's joints."""
        ev = self.evidence
        x, lab = K.flat(probs, labels)
        if "log_e" in self.needs:
            if self._cond is None:
                self._cond = T.leep_conditional(ev.joint).to(K.compute_dtype(probs))
            e = K.expected(x, lab, self._cond, False)
            # Nguyen et al. 2020, LEEP, ICML, sec. 3, eq. (2), pixels as samples: sum of log e
            ev.log_e = _add(ev.log_e, torch.log(e.clamp_min(K.EPS)).sum(dtype=torch.float64))
        if "window_log_e" in self.needs:
            if self._window_cond is None:
                self._window_cond = T.location_conditional(ev.window_joint)
            part = T.location_log_e_sum(probs, labels, self._window_cond, self.stride, validate=False)
            ev.window_log_e = _add(ev.window_log_e, part)

    def result(self) -> Evidence:
        if self.sample is not None:
            self.evidence.features, self.evidence.feature_labels = self.sample.result()
        return self.evidence


@torch.inference_mode()
def gather(
    model: nn.Module,
    loader: Iterable[Mapping[str, Any]],
    needs: Iterable[str],
    num_classes: int,
    device: torch.device | str,
    *,
    stride: int | None = None,
    per_class: int = PER_CLASS,
    seed: int = 0,
) -> Evidence:
    """The ``Evidence`` in ``needs`` of a frozen source model (eval mode, on ``device``) over ``loader``'s
    batches (``image``, ``label`` and, for features, ``index``); features need ``model.body`` and ``model.head``."""
    device = torch.device(device)
    gatherer = Gatherer(needs, num_classes, stride=stride, per_class=per_class, seed=seed)
    features = gatherer.sample is not None
    if features and not (isinstance(getattr(model, "body", None), nn.Module) and hasattr(model, "head")):
        kind = type(model).__name__
        raise ValueError(f"feature estimators need a model with a body and a head (a SegModel); got {kind}")
    seen = LabelRange()
    for batch, probs, labels, feats in batches(model, loader, num_classes, device, seen, features=features):
        if features and "index" not in batch:
            raise ValueError("batches need an 'index' entry to seed the feature sample")
        index = torch.as_tensor(batch["index"], device=device) if features else None
        gatherer.first(probs, labels, feats, index)
    seen.check(num_classes)
    if gatherer.second_pass:
        for _, probs, labels, _ in batches(model, loader, num_classes, device, LabelRange()):
            gatherer.second(probs, labels)
    return gatherer.result()
