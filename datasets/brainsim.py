"""brainsim: brains with tumours from real anatomy, four contrasts, four scanners, and a negative-transfer dial.

The anatomy is real, the subjects and tumours are synthetic (docs/design.md §Testbed). Each subject is a
seeded deformation of nilearn's bundled ICBM152 template (``datasets.icbm152``) on a 64x64x48 grid of
2.5x3x3 mm, with one lobulated tumour placed in white matter that pushes the surrounding tissue outward
(mass effect): necrotic core (NCR = 1), enhancing rim (ET = 4) and oedema (ED = 2), as the phantom models
them. Four contrasts t1, t1ce, t2, flair are rendered from a per-tissue intensity table (the phantom's,
``datasets.phantom.TISSUE_INTENSITY``, whose orderings are cited there) mixed by partial volume, with the
template's real T1 texture inside normal tissue. Each institution is a scanner made of TorchIO transforms
(Pérez-García et al., CMPB 2021), seeded per subject and contrast: gamma, bias field, blur or thick slices,
motion or ghosting, Gaussian noise (``SITES``).

Written in the FeTS 2021 layout, so the ``fets2021`` adapter reads the four contrasts and plain BraTS labels.
Beside them, for the dial (docs/design.md §Testbed gives the equations):

- ``<id>_dial.nii.gz``: a composite label (``DIAL_REGIONS``): the BraTS regions, the normal tissues CSF, GM,
  WM, and the dial's ranks: the core's voxels in percent of its volume from its centre outward, the CSF's in
  percent of the core's volume from the deepest (the lateral ventricles) outward; the label-conflict source
  regions ``LC<p>`` (the core beyond its inner p %, plus the deepest CSF of p % of its volume) are value sets;
- ``<id>_cc<p>.nii.gz``: the contrast-conflict target contrast at level p%: flair with the inner p% of the
  tumour at the CSF level and grey-matter patches of p% of the tumour's volume at the oedema level;
- ``<id>_risk-lc<p>.nii.gz`` / ``<id>_risk-cc<p>.nii.gz``: the ground-truth risk map of each dial transfer
  (1 where the source task conflicts with the target task by construction).

``brainsim`` reads the dial files too: regions ``LC<p>``, modalities ``cc<p>`` and ``risk_map(...)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.ndimage import distance_transform_edt, map_coordinates

from datasets.base import DATASETS, DataError, Subject, Task
from datasets.fets import FeTS2021
from datasets.generated import generate_once
from datasets.icbm152 import Template, load_template, smooth_noise, subject_coordinates, tissue_means, view_centre
from datasets.phantom import TISSUE_INTENSITY

BRAINSIM_VERSION = 2
SHAPE = (64, 64, 48)
SPACING = (2.5, 3.0, 3.0)  # mm, as mni152: the grid spans 160 x 192 x 144 mm
MODALITIES = ("t1", "t1ce", "t2", "flair")
CSF, GM, WM, NCR, ED, ET = range(6)  # rows of TISSUE_INTENSITY
BRATS = {NCR: 1, ED: 2, ET: 4}
T1_LIKE = ("t1", "t1ce")
BASE_CONTRAST = "flair"  # the contrast-conflict dial swaps levels of this contrast
CORE_BINS = 100  # dial bins per tumour-core volume: levels are whole percents
# Codes of the composite dial label beside the BraTS ones (core: label + 10 (bin + 1), bin < CORE_BINS).
ED_CODE, CSF_CODE, GM_CODE, WM_CODE = 2 + 10 * (CORE_BINS + 1), 3000, 4001, 4002
DEFAULTS: dict[str, Any] = {"subjects": 48, "groups": 4, "levels": (0, 0.25, 0.5, 0.75, 1), "seed": 0}

# Institutions as scanners (TorchIO transform arguments; ranges are drawn per subject and contrast).
# 01: a clean 3 T scanner; 02: a noisy 1.5 T one with a strong bias field; 03: thick slices (anisotropic
# resolution, 2-4x along the slice axis); 04: patient motion and k-space ghosting.
SITES: dict[str, dict[str, dict[str, Any]]] = {
    "01": {
        "RandomGamma": {"log_gamma": (-0.1, 0.1)},
        "RandomBiasField": {"coefficients": (0.1, 0.2)},
        "RandomNoise": {"std": (0.01, 0.02)},
    },
    "02": {
        "RandomGamma": {"log_gamma": (-0.25, 0.0)},
        "RandomBiasField": {"coefficients": (0.3, 0.5)},
        "RandomBlur": {"std": (0.5, 1.0)},
        "RandomNoise": {"std": (0.04, 0.06)},
    },
    "03": {
        "RandomGamma": {"log_gamma": (0.0, 0.25)},
        "RandomBiasField": {"coefficients": (0.2, 0.3)},
        "RandomAnisotropy": {"axes": (2,), "downsampling": (2.0, 4.0)},
        "RandomNoise": {"std": (0.02, 0.03)},
    },
    "04": {
        "RandomGamma": {"log_gamma": (-0.1, 0.1)},
        "RandomBiasField": {"coefficients": (0.2, 0.3)},
        "RandomMotion": {"degrees": (1.0, 3.0), "translation": (1.0, 3.0), "num_transforms": 2},
        "RandomGhosting": {"num_ghosts": (2, 6), "axes": (1,), "intensity": (0.2, 0.5)},
        "RandomNoise": {"std": (0.02, 0.03)},
    },
}


def check_options(subjects: Any, groups: Any, levels: Any, seed: Any) -> dict[str, Any]:
    """Generation parameters from dataset options (levels as whole percents); a ``DataError`` names the bad one."""

    def integer(name: str, value: Any, low: int, high: int) -> int:
        if isinstance(value, bool) or not str(value).strip().isdigit():
            raise DataError(f"dataset 'brainsim': {name}={value!r} is not a non-negative integer")
        if not low <= int(value) <= high:
            raise DataError(f"dataset 'brainsim': {name}={value} must lie in [{low}, {high}]")
        return int(value)

    n_groups = integer("groups", groups, 1, len(SITES))
    parts = levels if isinstance(levels, list | tuple) else str(levels).split(",")
    percents = []
    for part in parts:
        try:
            value = float(part)
        except (TypeError, ValueError):
            raise DataError(f"dataset 'brainsim': levels={levels!r}: {part!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise DataError(f"dataset 'brainsim': dial level {value:g} lies outside [0, 1]")
        if abs(value * 100 - round(value * 100)) > 1e-9:
            raise DataError(f"dataset 'brainsim': dial level {value:g} is not a whole percent")
        percents.append(round(value * 100))
    if not percents or len(set(percents)) != len(percents):
        raise DataError(f"dataset 'brainsim': levels={levels!r} must be distinct values in [0, 1]")
    return {
        "version": BRAINSIM_VERSION,
        "n_subjects": integer("subjects", subjects, 3 * n_groups, 10_000),
        "n_groups": n_groups,
        "levels": sorted(percents),
        "seed": integer("seed", seed, 0, 2**31 - 1),
    }


def _tumour_site(
    rng: np.random.Generator, white: np.ndarray, inside: np.ndarray, spacing: tuple[float, ...], reach_mm: float
) -> np.ndarray:
    """A white-matter voxel (mm) at least ``reach_mm`` inside the brain, else the deepest white-matter voxel."""
    depth = distance_transform_edt(inside, sampling=spacing)
    candidates = np.argwhere(white & (depth >= reach_mm))
    if len(candidates) == 0:
        candidates = np.argwhere(depth == depth[white].max())
    return candidates[rng.integers(len(candidates))] * np.asarray(spacing)


def _mass_effect(coords: np.ndarray, centre_mm: np.ndarray, scale_mm: float, strength: float, spacing) -> np.ndarray:
    """Resample the subject's template coordinates so that tissue moves away from the tumour centre.

    Voxel x takes the content of y = c + (x - c)(1 - m exp(-|x - c|^2 / (2 s^2))), a monotone radial map
    for m < 1 (its radial derivative is at least 1 - m), so tissue is compressed around the tumour.
    """
    shape = coords.shape[1:]
    grid = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"))
    rel = grid * np.asarray(spacing)[:, None, None, None] - centre_mm[:, None, None, None]
    shrink = 1.0 - strength * np.exp(-(rel**2).sum(0) / (2 * scale_mm**2))
    source = (centre_mm[:, None, None, None] + rel * shrink) / np.asarray(spacing)[:, None, None, None]
    return np.stack([map_coordinates(c, source, order=1, mode="nearest") for c in coords])


def _ramp(threshold: float, d: np.ndarray, voxels_per_unit: float) -> np.ndarray:
    """Partial volume of ``d < threshold``: a linear ramp one voxel wide across the boundary."""
    return np.clip((threshold - d) * voxels_per_unit + 0.5, 0.0, 1.0)


def _rank_fraction(d: np.ndarray, mask: np.ndarray, total: int) -> np.ndarray:
    """Per voxel of ``mask``: how many mask voxels lie closer (smaller ``d``), divided by ``total``."""
    values = d[mask]
    order = np.argsort(values, kind="stable")
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = np.arange(len(values))
    out = np.full(d.shape, np.inf)
    out[mask] = rank / max(total, 1)
    return out


class Anatomy:
    """One subject's tissue fractions, BraTS labels and the dial's geometry (docs/design.md §Testbed)."""

    def __init__(
        self, rng: np.random.Generator, template: Template, means: np.ndarray, centre: np.ndarray, shape, spacing
    ) -> None:
        t1_tpl, tissues_tpl, brain_tpl = template
        coords = subject_coordinates(rng, centre, shape, spacing)
        core_mm = rng.uniform(9.0, 18.0)  # core radius
        r_ncr, r_ed = rng.uniform(0.4, 0.7), rng.uniform(1.4, 1.9)  # in core radii
        first = lambda v: map_coordinates(v, coords, order=1, mode="constant", cval=0.0)  # noqa: E731
        inside0 = first(brain_tpl) > 0.5
        site = _tumour_site(rng, inside0 & (first(tissues_tpl[2]) > 0.5), inside0, spacing, 0.6 * core_mm * r_ed)
        coords = _mass_effect(coords, site, core_mm * r_ed, rng.uniform(0.25, 0.45), spacing)
        sample = lambda v: map_coordinates(v, coords, order=1, mode="constant", cval=0.0)  # noqa: E731
        t1 = sample(t1_tpl)
        p = np.stack([sample(v) for v in tissues_tpl])
        self.inside = sample(brain_tpl) > 0.5
        p = p / np.maximum(p.sum(0), 1e-6) * self.inside
        grid = np.stack(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"))
        dist = np.sqrt((((grid * np.asarray(spacing)[:, None, None, None]) - site[:, None, None, None]) ** 2).sum(0))
        lobes = 1.0 + 0.35 * smooth_noise(rng, shape, max(core_mm / min(spacing) / 2, 1.0))
        self.d = dist / core_mm * lobes  # tumour distance in core radii: the core is d < 1
        per_unit = core_mm / min(spacing)  # voxels per unit of d, for one-voxel partial volume
        csf_dominant = p[CSF] >= p[1:].max(0)
        ncr, core = _ramp(r_ncr, self.d, per_unit), _ramp(1.0, self.d, per_unit)
        oedema = (_ramp(r_ed, self.d, per_unit) - core) * (1.0 - p[CSF])
        normal = np.clip(1.0 - core - oedema, 0.0, 1.0)
        self.fractions = np.concatenate([p * normal, np.stack([ncr, oedema, core - ncr])]) * self.inside  # 6 tissues
        self.means = means
        self.texture = t1 - np.einsum("k,k...->...", means, p)  # the template's T1 detail within tissue
        self.tumour_texture = smooth_noise(rng, shape, 1.0)
        label = np.zeros(shape, dtype=np.uint8)
        label[self.inside & (self.d < r_ed) & ~csf_dominant] = BRATS[ED]
        label[self.inside & (self.d < 1.0)] = BRATS[ET]
        label[self.inside & (self.d < r_ncr)] = BRATS[NCR]
        self.label = label
        normal = self.inside & (label == 0)
        self.tissue = np.where(normal, p.argmax(0), -1)  # hard CSF/GM/WM of the normal brain, -1 elsewhere
        tumour = label > 0
        core = int(tumour.sum() - (label == BRATS[ED]).sum())
        # Label dial: the core from its centre outward, and the deepest CSF (the lateral ventricles) in volumes of
        # the core. Contrast dial: the tumour from its centre outward, and grey-matter patches (a smooth random
        # field) in volumes of the tumour.
        self.core_rank = _rank_fraction(self.d, tumour & (label != BRATS[ED]), core)
        depth = distance_transform_edt(self.inside, sampling=spacing)
        self.deep_csf_rank = _rank_fraction(-depth, self.tissue == CSF, core)
        self.tumour_rank = _rank_fraction(self.d, tumour, int(tumour.sum()))
        self.gm_rank = _rank_fraction(smooth_noise(rng, shape, 2.0), self.tissue == GM, int(tumour.sum()))

    def dial_label(self) -> np.ndarray:
        """The composite label of the dial file (``DIAL_CODES``): BraTS label + 10 (core percentile + 1) in the
        tumour core, ED_CODE in the oedema, CSF_CODE + deep-CSF percentile, GM_CODE, WM_CODE, 0 outside."""
        core_bins = np.minimum(np.floor(self.core_rank * CORE_BINS), CORE_BINS - 1)
        csf_bins = np.minimum(np.floor(self.deep_csf_rank * CORE_BINS), CORE_BINS)
        out = np.where(self.label > 0, self.label + 10 * (core_bins + 1), 0)
        out = np.where(self.label == BRATS[ED], ED_CODE, out)
        out = np.where(self.tissue == CSF, CSF_CODE + csf_bins, out)
        return np.where(self.tissue == GM, GM_CODE, np.where(self.tissue == WM, WM_CODE, out)).astype(np.int16)

    def contrast_swap(self, percent: int) -> tuple[np.ndarray, np.ndarray]:
        """The tumour voxels and the grey-matter voxels whose level the contrast dial swaps at ``percent``."""
        return self.tumour_rank < percent / 100, self.gm_rank < percent / 100

    def render(self, levels: np.ndarray, t1_like: bool, swap_percent: int | None = None) -> np.ndarray:
        """Clean image: tissue fractions x levels plus texture (the template's T1 detail, at full strength on
        T1-weighted contrasts, half and inverted elsewhere, as mni152). ``swap_percent``: the contrast dial puts
        the swapped tumour at the CSF level and the swapped grey matter at the oedema level."""
        per_voxel = np.broadcast_to(levels.reshape(-1, *[1] * (self.fractions.ndim - 1)), self.fractions.shape).copy()
        if swap_percent is not None:
            tumour, grey = self.contrast_swap(swap_percent)
            # Partial-volume voxels go with the tumour voxels nearest to them: a threshold on the distance d.
            reach = np.inf if swap_percent >= 100 else np.max(self.d[tumour], initial=-np.inf)
            for k in (NCR, ED, ET):
                per_voxel[k][self.d <= reach] = levels[CSF]
            per_voxel[GM][grey] = levels[ED]
        image = (self.fractions * per_voxel).sum(0)
        gain = (levels[WM] - levels[CSF]) / (self.means[WM] - self.means[CSF]) * (1.0 if t1_like else 0.5)
        tumour_part = self.fractions[NCR:].sum(0)
        image = image + gain * self.texture * (1.0 - tumour_part) + 0.05 * self.tumour_texture * tumour_part
        return np.clip(image, 0.01, None) * self.inside


def _scanner(site: str, image: np.ndarray, spacing: tuple[float, ...], seed: list[int]) -> np.ndarray:
    """The site's TorchIO transforms on one clean contrast, seeded; magnitude image (|x|), zero outside."""
    import torch
    import torchio as tio

    transform = tio.Compose([getattr(tio, name)(**kwargs) for name, kwargs in SITES[site].items()])
    subject = tio.ScalarImage(tensor=torch.from_numpy(image[None].astype(np.float32)), affine=np.diag([*spacing, 1.0]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1)[0]))
        out = transform(subject).data[0].numpy()
    return np.abs(out)


def _finish(image: np.ndarray, inside: np.ndarray) -> np.ndarray:
    scaled = np.clip(np.rint(image * 1000.0), 1, 32767)  # >= 1 inside: 0 marks background
    return np.where(inside, scaled, 0).astype(np.int16)


def _save(array: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, np.diag([*SPACING, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def generate_brainsim(root: Path, **options: Any) -> Path:
    """Write a brainsim set at ``root`` (FeTS 2021 layout plus dial files); deterministic in the options.

    Subject i depends only on (seed, i) and its institution (i mod groups); built in a temporary sibling
    folder and renamed into place, so ``root`` is either absent or complete.
    """
    params = check_options(**{**DEFAULTS, **options})

    def build(tmp: Path) -> None:
        template = load_template(SPACING)
        means = tissue_means(*template)
        centre = view_centre(template[2], SHAPE, SPACING)
        rows = []
        for i in range(params["n_subjects"]):
            sid = f"BrainSim_{i + 1:03d}"
            site = f"{i % params['n_groups'] + 1:02d}"
            rows.append((sid, site))
            rng = np.random.default_rng([params["seed"], i])
            anatomy = Anatomy(rng, template, means, centre, SHAPE, SPACING)
            jitter = rng.uniform(0.97, 1.03, size=6)  # per-subject biological variation of each tissue
            folder = tmp / sid
            folder.mkdir()
            for m, modality in enumerate(MODALITIES):
                image = anatomy.render(np.asarray(TISSUE_INTENSITY[modality]) * jitter, modality in T1_LIKE)
                _save(
                    _finish(_scanner(site, image, SPACING, [params["seed"], i, m]), anatomy.inside),
                    folder / f"{sid}_{modality}.nii.gz",
                )
            base = np.asarray(TISSUE_INTENSITY[BASE_CONTRAST]) * jitter
            for p in params["levels"]:  # the same scanner draw as flair: the swap is the only difference
                image = anatomy.render(base, BASE_CONTRAST in T1_LIKE, swap_percent=p)
                seed = [params["seed"], i, MODALITIES.index(BASE_CONTRAST)]
                _save(_finish(_scanner(site, image, SPACING, seed), anatomy.inside), folder / f"{sid}_cc{p}.nii.gz")
                tumour, grey = anatomy.contrast_swap(p)
                _save((tumour | grey).astype(np.uint8), folder / f"{sid}_risk-cc{p}.nii.gz")
            dial = anatomy.dial_label()
            _save(anatomy.label, folder / f"{sid}_seg.nii.gz")
            _save(dial, folder / f"{sid}_dial.nii.gz")
            for p in params["levels"]:
                _save(label_risk(dial, p).astype(np.uint8), folder / f"{sid}_risk-lc{p}.nii.gz")
        pd.DataFrame(rows, columns=["Subject_ID", "Partition_ID"]).to_csv(tmp / "partitioning_1.csv", index=False)

    return generate_once(root, params, "brainsim", build)


def lc_values(percent: int) -> frozenset[int]:
    """Raw dial values of the label-conflict source region LC<p>: the core beyond its inner p %, and the
    deepest CSF of p % of the core's volume."""
    core = {b + 10 * (k + 1) for b in (BRATS[NCR], BRATS[ET]) for k in range(percent, CORE_BINS)}
    return frozenset(core | {CSF_CODE + k for k in range(percent)})


def label_risk(raw: np.ndarray, percent: int) -> np.ndarray:
    """Source region LC<p> XOR target region TC: where the label-conflict source and target disagree."""
    return np.isin(raw, sorted(lc_values(percent))) ^ np.isin(raw, sorted(DIAL_REGIONS["TC"]))


_CORE = {b: frozenset(b + 10 * (k + 1) for k in range(CORE_BINS)) for b in (BRATS[NCR], BRATS[ET])}
DIAL_REGIONS = {  # the BraTS regions and the normal tissues as sets of dial-label values
    "NCR": _CORE[BRATS[NCR]],
    "ED": frozenset({ED_CODE}),
    "ET": _CORE[BRATS[ET]],
    "TC": _CORE[BRATS[NCR]] | _CORE[BRATS[ET]],
    "WT": _CORE[BRATS[NCR]] | _CORE[BRATS[ET]] | {ED_CODE},
    "CSF": frozenset(range(CSF_CODE, CSF_CODE + CORE_BINS + 1)),
    "GM": frozenset({GM_CODE}),
    "WM": frozenset({WM_CODE}),
}


@DATASETS.register("brainsim")
class BrainSim(FeTS2021):
    """SYNTHETIC brains with tumours from the real ICBM152 template, 4 scanners, a negative-transfer dial."""

    def __init__(self, root: Path, partitioning: int = 1, **options: Any) -> None:
        root = Path(root)
        generation = {k: options.pop(k) for k in list(options) if k in DEFAULTS}
        if options:
            raise DataError(f"dataset 'brainsim': unknown option(s) {sorted(options)}; valid: {', '.join(DEFAULTS)}")
        if (root / "partitioning_1.csv").is_file() and not (root / "brainsim.json").is_file():
            raise DataError(
                f"--data-root {root}: a FeTS-layout folder but not a generated brainsim set (no brainsim.json)"
            )
        if not (root / "brainsim.json").is_file():  # the cache folder of generated sets
            params = check_options(**{**DEFAULTS, **generation})
            tag = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
            root = generate_brainsim(root / f"v{BRAINSIM_VERSION}-{tag}", **generation)
        elif generation:
            raise DataError(
                f"--data-root {root}: a generated brainsim set takes no generation options {sorted(generation)}"
            )
        self.params = json.loads((root / "brainsim.json").read_text())
        super().__init__(root, partitioning=partitioning)
        levels = self.params["levels"]
        self.regions = {**DIAL_REGIONS, **{f"LC{p}": lc_values(p) for p in levels}}
        self.label_values = frozenset({0}).union(*DIAL_REGIONS.values())
        self.dial_modalities = [f"cc{p}" for p in levels]

    @classmethod
    def default_root(cls, cache_dir: Path) -> Path:
        return Path(cache_dir) / "brainsim"

    def _read(self) -> list[Subject]:
        subjects = []
        for s in super()._read():
            folder = self.root / s.id
            extra = {m: folder / f"{s.id}_{m}.nii.gz" for m in self.dial_modalities}
            missing = [p for p in [*extra.values(), folder / f"{s.id}_dial.nii.gz"] if not p.is_file()]
            if missing:
                raise DataError(f"{missing[0]}: missing (a brainsim set holds the dial files of every subject)")
            subjects.append(Subject(s.id, s.group, {**s.images, **extra}, folder / f"{s.id}_dial.nii.gz", s.spacing))
        return subjects

    def dial(self, source: Task, target: Task) -> str | None:
        """The risk map's name (``lc<p>`` / ``cc<p>``) when (source, target) is a dial transfer, else None."""
        if source.group != target.group:
            return None
        if source.modality == target.modality and target.regions == ("TC",) and len(source.regions) == 1:
            head = source.regions[0]
            return f"lc{head[2:]}" if head.startswith("LC") else None
        if (source.modality, source.regions) == (BASE_CONTRAST, ("WT",)) and target.regions == ("WT",):
            return target.modality if target.modality in self.dial_modalities else None
        return None

    def risk_map(self, subject: Subject, source: Task, target: Task) -> Path | None:
        """The subject's ground-truth risk map file of a dial transfer, else None."""
        name = self.dial(source, target)
        return None if name is None else self.root / subject.id / f"{subject.id}_risk-{name}.nii.gz"
