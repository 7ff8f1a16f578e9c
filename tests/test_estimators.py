"""methods.estimators: the registry, parity of every estimator with an independent transcription of its reference
on classification-shaped float64 inputs (1e-6 relative), the one-pass engine and its feature sample.

References read (transcribed below in plain numpy, not calling the implementation):
thuml/Transfer-Learning-Library tllib/ranking/leep.py @ 83d900556472e70aaad06211b635a7693c26353b,
nce.py @ 56ccfd7416b21b95351dffacc2aab1fe30f68561, hscore.py (h_score, regularized_h_score)
@ b0d863f20511e60fbc6f5491f37faf2765451cf7, logme.py @ e389504ca8f50dd36755630dabef1ebee0e6581a,
transrate.py @ efe6e33caf5a6ea67f6e72135a2ac0ebf847742d; scikit-learn 1.9.1 sklearn/covariance/_shrunk_covariance.py
(ledoit_wolf_shrinkage, the Ledoit-Wolf estimate regularized_h_score calls). GBC: Pándy et al., CVPR 2022, eqs. 1-3
(diagonal Gaussians, Bhattacharyya distance, GBC = -sum_{i != j} BC), with the variance estimate of the authors'
code (google-research stable_transfer/transferability/gbc.py @ 1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31: variance
over the class's samples, floored at 1e-4).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from datasets.slices import SliceDataset, SliceSet
from methods import transferability as tr
from methods.estimators import ESTIMATORS, estimate, estimate_maps, map_names
from methods.estimators.engine import BalancedSample, Gatherer, gather, pixel_keys
from methods.leep_driver import compute_location_map

RTOL = 1e-6
FEATURE_ESTIMATORS = ("gbc", "hscore", "hscore-shrinkage", "logme", "transrate")


# --- references, transcribed ------------------------------------------------------------------------------------


def ref_leep(source_pred: np.ndarray, target_label: np.ndarray) -> float:  # tllib leep.py
    n, c_s = source_pred.shape
    c_t = int(np.max(target_label) + 1)
    normalized_prob = source_pred / float(n)
    joint = np.zeros((c_t, c_s))
    for i in range(c_t):
        joint[i] = np.sum(normalized_prob[target_label == i], axis=0)
    p_target_given_source = (joint / joint.sum(axis=0, keepdims=True)).T
    empirical_prediction = source_pred @ p_target_given_source
    empirical_prob = np.array([predict[label] for predict, label in zip(empirical_prediction, target_label)])
    return float(np.mean(np.log(empirical_prob)))


def ref_nce(source_labels: np.ndarray, target_labels: np.ndarray) -> float:  # tllib nce.py
    c_t, c_s, n = int(np.max(target_labels) + 1), int(np.max(source_labels) + 1), len(source_labels)
    joint = np.zeros((c_t, c_s))
    for s, t in zip(source_labels, target_labels):
        joint[int(t), int(s)] += 1.0 / n
    p_z = joint.sum(axis=0, keepdims=True)
    p_target_given_source = (joint / p_z).T
    mask = p_z.reshape(-1) != 0
    p_target_given_source = p_target_given_source[mask] + 1e-20
    entropy_y_given_z = np.sum(-p_target_given_source * np.log(p_target_given_source), axis=1, keepdims=True)
    return float(-np.sum(entropy_y_given_z * p_z.reshape((-1, 1))[mask]))


def _class_means(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = np.zeros_like(f)
    for i in range(int(y.max() + 1)):
        g[y == i] = np.mean(f[y == i, :], axis=0)
    return g


def ref_h_score(f: np.ndarray, y: np.ndarray) -> float:  # tllib hscore.py h_score
    covf = np.cov(f, rowvar=False)
    covg = np.cov(_class_means(f, y), rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(covf, rcond=1e-15), covg)))


def ref_ledoit_wolf(x: np.ndarray) -> tuple[np.ndarray, float]:  # sklearn ledoit_wolf_shrinkage + ledoit_wolf
    x = x - x.mean(0)
    n_samples, n_features = x.shape
    x2 = x**2
    emp_cov_trace = np.sum(x2, axis=0) / n_samples
    mu = np.sum(emp_cov_trace) / n_features
    beta_ = np.sum(np.dot(x2.T, x2))
    delta_ = np.sum(np.dot(x.T, x) ** 2) / n_samples**2
    beta = 1.0 / (n_features * n_samples) * (beta_ / n_samples - delta_)
    delta = (delta_ - 2.0 * mu * emp_cov_trace.sum() + n_features * mu**2) / n_features
    beta = min(beta, delta)
    shrinkage = 0 if beta == 0 else beta / delta
    emp_cov = np.dot(x.T, x) / n_samples
    shrunk = (1.0 - shrinkage) * emp_cov
    shrunk.flat[:: n_features + 1] += shrinkage * np.trace(emp_cov) / n_features
    return shrunk, shrinkage


def ref_regularized_h_score(f: np.ndarray, y: np.ndarray) -> float:  # tllib hscore.py regularized_h_score
    f = f - np.mean(f, axis=0, keepdims=True)
    covf_alpha, alpha = ref_ledoit_wolf(f)
    covg = np.cov(_class_means(f, y), rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(covf_alpha, rcond=1e-15), (1 - alpha) * covg)))


def _each_evidence(y_, f, fh, v, s, vh, n, d):  # tllib logme.py each_evidence
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    tmp = vh @ (f @ y_)
    for _ in range(11):
        gamma = (s / (s + lam)).sum()
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = (m * m).sum()
        alpha = gamma / alpha_de
        beta_de = ((y_ - fh @ m) ** 2).sum()
        beta = (n - gamma) / beta_de
        new_lam = alpha / beta
        if np.abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * s))
        - beta / 2.0 * beta_de
        - alpha / 2.0 * alpha_de
        - n / 2.0 * np.log(2 * np.pi)
    )
    return evidence / n


def ref_logme(features: np.ndarray, targets: np.ndarray) -> float:  # tllib logme.py log_maximum_evidence
    fh = features.astype(np.float64)
    f = fh.transpose()
    d, n = f.shape
    v, s, vh = np.linalg.svd(f @ fh, full_matrices=True)
    evidences = [
        _each_evidence((targets == i).astype(np.float64), f, fh, v, s, vh, n, d) for i in range(int(targets.max() + 1))
    ]
    return float(np.mean(evidences))


def _coding_rate(f: np.ndarray, eps: float = 1e-4) -> float:  # tllib transrate.py coding_rate
    n, d = f.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + 1 / (n * eps) * f.transpose() @ f)[1]


def ref_transrate(f: np.ndarray, y: np.ndarray, eps: float = 1e-4) -> float:  # tllib transrate.py transrate
    f = f - np.mean(f, axis=0, keepdims=True)
    c = int(y.max() + 1)
    return float(_coding_rate(f, eps) - sum(_coding_rate(f[(y == i).flatten()], eps) for i in range(c)) / c)


def ref_gbc(f: np.ndarray, y: np.ndarray) -> float:  # Pándy et al. 2022, eqs. 1-3, full-matrix form
    stats = []
    for c in range(int(y.max() + 1)):
        x = f[y == c]
        stats.append((x.mean(0), np.diag(np.maximum(((x - x.mean(0)) ** 2).mean(0), 1e-4))))
    total = 0.0
    for i, (mu_i, cov_i) in enumerate(stats):
        for j, (mu_j, cov_j) in enumerate(stats):
            if i == j:
                continue
            cov = (cov_i + cov_j) / 2
            diff = mu_i - mu_j
            db = diff @ np.linalg.inv(cov) @ diff / 8 + 0.5 * np.log(
                np.linalg.det(cov) / np.sqrt(np.linalg.det(cov_i) * np.linalg.det(cov_j))
            )
            total += np.exp(-db)
    return -total


# --- classification-shaped inputs through the real gathering code ----------------------------------------------


def classification(seed: int, n: int = 420, d: int = 6, k: int = 4, c: int = 3):
    """Features (n, d) with class-dependent means, labels (n,) n / c of each of 0..c-1 (so the class-balanced
    sample keeps every pixel), softmax probs (n, k) of a head."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % c)
    features = rng.normal(size=(n, d)) + rng.normal(scale=1.5, size=(c, d))[labels]
    features[:, 0] *= 3.0  # unequal scales
    logits = features @ rng.normal(size=(d, k))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return features, labels, probs / probs.sum(1, keepdims=True)


def evidence_of(features: np.ndarray, labels: np.ndarray, probs: np.ndarray, needs: set[str], batch: int = 64):
    """The Evidence of float64 pixels given as 1x1 images, in batches, every pixel in the feature sample."""
    gatherer = Gatherer(needs, int(labels.max()) + 1, per_class=len(labels))
    f, y, p = torch.from_numpy(features), torch.from_numpy(labels), torch.from_numpy(probs)
    for start in range(0, len(y), batch):
        rows = slice(start, start + batch)
        index = torch.arange(start, min(start + batch, len(y)))
        gatherer.first(p[rows, :, None, None], y[rows, None, None], f[rows, :, None, None], index)
    if gatherer.second_pass:
        for start in range(0, len(y), batch):
            gatherer.second(p[start : start + batch, :, None, None], y[start : start + batch, None, None])
    return gatherer.result()


REFERENCES = {
    "leep": lambda f, y, p: ref_leep(p, y),
    "nce": lambda f, y, p: ref_nce(p.argmax(1), y),
    "hscore": lambda f, y, p: ref_h_score(f, y),
    "hscore-shrinkage": lambda f, y, p: ref_regularized_h_score(f, y),
    "logme": lambda f, y, p: ref_logme(f, y),
    "gbc": lambda f, y, p: ref_gbc(f, y),
    "transrate": lambda f, y, p: ref_transrate(f, y),
}


def test_every_builtin_estimator_has_a_reference_and_names_its_paper():
    assert set(REFERENCES) <= set(ESTIMATORS.names())
    for name in REFERENCES:
        doc = ESTIMATORS.get(name).__doc__ or ""
        assert re.search(r"\(\w[^()]*(ICCV|ICIP|ICML|CVPR|20\d\d)", doc), name  # (Authors, VENUE YEAR ...
    assert map_names() == ["leep", "nce"]
    with pytest.raises(ValueError, match="unknown estimator 'leap'; valid: gbc, hscore"):
        ESTIMATORS.get("leap")


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_parity_with_reference(name: str, seed: int):
    features, labels, probs = classification(seed, c=2 + seed)
    estimator = ESTIMATORS.get(name)()
    got = estimator.score(evidence_of(features, labels, probs, set(estimator.needs)))
    assert got == pytest.approx(REFERENCES[name](features, labels, probs), rel=RTOL)


def test_ledoit_wolf_transcription_matches_scikit_learn():
    covariance = pytest.importorskip("sklearn.covariance")
    features, _, _ = classification(0)
    lw = covariance.LedoitWolf(assume_centered=False).fit(features - features.mean(0))
    shrunk, shrinkage = ref_ledoit_wolf(features)
    assert shrinkage == pytest.approx(lw.shrinkage_, rel=1e-12)
    np.testing.assert_allclose(shrunk, lw.covariance_, rtol=1e-12)


# --- the engine on a model ---------------------------------------------------------------------------------------


class TinySeg(nn.Module):
    """A body (per-pixel features) and a 1x1 head, as benchmarks.backbones.SegModel declares them."""

    def __init__(self, k: int = 4, d: int = 5) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, d, 3, padding=1), nn.Tanh())
        self.head = nn.Conv2d(d, k, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def slice_set(n: int = 12, size: tuple[int, int] = (12, 10), c: int = 3, seed: int = 0) -> SliceSet:
    """Random slices, as many pixels of each class as n x size allows."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n * size[0] * size[1]) % c).reshape(n, *size).astype(np.uint8)
    images = (labels[:, None] + rng.normal(0, 0.7, (n, 1, *size))).astype(np.float32)
    return SliceSet.of_volume(images, labels)


def model_outputs(model: TinySeg, slices: SliceSet) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        feats = model.body(torch.from_numpy(slices.images))
        return feats, torch.softmax(model.head(feats), 1), torch.from_numpy(slices.labels).long()


def test_estimate_matches_the_maths_on_the_model_outputs():
    model, slices = TinySeg().eval(), slice_set()
    feats, probs, labels = model_outputs(model, slices)
    got = estimate(model, slices, sorted(REFERENCES), batch_size=5, per_class=10**6)
    assert got["leep"] == pytest.approx(tr.segmentation_leep(probs, labels, 3), abs=1e-6)
    assert got["nce"] == pytest.approx(tr.segmentation_nce(probs.argmax(1), labels, 4, 3), abs=1e-9)
    f = feats.double().permute(0, 2, 3, 1).reshape(-1, feats.shape[1]).numpy()
    y = labels.reshape(-1).numpy()
    for name in FEATURE_ESTIMATORS:  # every pixel is in the sample: the reference on all of them
        assert got[name] == pytest.approx(REFERENCES[name](f, y, None), rel=1e-6), name


def test_location_maps_match_the_driver_and_a_per_window_reference():
    model, slices = TinySeg().eval(), slice_set(n=9, size=(13, 11))
    _, probs, labels = model_outputs(model, slices)
    maps = estimate_maps(model, slices, ["leep", "nce"], stride=3, batch_size=4)
    loader = DataLoader(SliceDataset(slices), batch_size=4)
    assert np.array_equal(maps["leep"], compute_location_map(model, loader, 3, 3, "cpu").numpy())  # bit-identical
    pred = probs.argmax(1).numpy()
    expected = np.zeros((4, 3))
    with np.errstate(invalid="ignore"):  # the reference divides by P(z) = 0 for source classes absent from a window
        for a in range(4):
            for b in range(3):
                window = (slice(None), slice(3 * a, 3 * a + 3), slice(3 * b, 3 * b + 3))
                expected[a, b] = ref_nce(pred[window].reshape(-1), labels.numpy()[window].reshape(-1))
    np.testing.assert_allclose(maps["nce"], expected, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match=r"\['logme'\] have no location map"):
        estimate_maps(model, slices, ["leep", "logme"])


def test_location_counts_sum_to_the_global_counts_and_add_over_batches():
    probs, labels = torch.rand(5, 3, 9, 8), torch.randint(0, 2, (5, 9, 8))
    pred = probs.argmax(1)
    whole = tr.location_counts(pred, labels, 3, 2, 4)
    assert whole.shape == (2, 2, 2, 3) and int(whole.sum()) == 5 * 8 * 8
    parts = [tr.location_counts(pred[rows], labels[rows], 3, 2, 4) for rows in (slice(0, 2), slice(2, 5))]
    assert torch.equal(whole, parts[0] + parts[1])
    assert torch.equal(whole.sum((0, 1)), tr.nce_counts(pred[:, :8, :8], labels[:, :8, :8], 3, 2))
    with pytest.raises(ValueError, match="source_pred must lie"):
        tr.location_counts(pred + 3, labels, 3, 2, 4)


def test_feature_estimators_need_a_body_and_a_head():
    plain = nn.Conv2d(1, 3, 1).eval()
    assert set(estimate(plain, slice_set(), ["leep", "nce"])) == {"leep", "nce"}
    with pytest.raises(ValueError, match="body and a head"):
        estimate(plain, slice_set(), ["logme"])
    with pytest.raises(TypeError, match="SliceSet"):
        estimate(TinySeg(), [1, 2], ["leep"])


# --- the feature sample ------------------------------------------------------------------------------------------


def splitmix64(seed: int, counter: int) -> float:
    """Plain-integer SplitMix64 of the counter-th value after the seed (Steele et al. 2014), as a [0, 1) double."""
    mask = (1 << 64) - 1
    z = (counter + (seed + 1) * 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return ((z ^ (z >> 31)) >> 11) / 2.0**53


def test_pixel_keys_are_splitmix64_of_seed_slice_and_pixel():
    keys = pixel_keys(torch.tensor([0, 7, 123456789]), 4096, seed=3)
    for row, index in enumerate([0, 7, 123456789]):
        for pixel in (0, 1, 4095):
            assert keys[row, pixel].item() == splitmix64(3, index * 4096 + pixel)
    assert 0.45 < pixel_keys(torch.arange(50), 1000, 0).mean().item() < 0.55


def test_sample_is_balanced_capped_and_independent_of_batching():
    model, slices = TinySeg().eval(), slice_set(n=20, size=(16, 16), c=3)
    slices.labels[:, :12] = 0  # class 0 common, classes 1 and 2 rarer
    slices.labels[:3, 14:, 14:] = 3  # 12 pixels of a rare class
    runs = []
    for batch_size in (1, 7, 20):
        loader = DataLoader(SliceDataset(slices), batch_size=batch_size)
        ev = gather(model, loader, {"features"}, 4, "cpu", per_class=100, seed=5)
        runs.append((ev.features, ev.feature_labels))
    features, labels = runs[0]
    assert torch.bincount(labels).tolist() == [12, 12, 12, 12]  # as many of each class as of the rarest
    for other_features, other_labels in runs[1:]:
        assert torch.equal(other_labels, labels)
        torch.testing.assert_close(other_features, features, rtol=1e-6, atol=1e-6)
    loader = DataLoader(SliceDataset(slices), batch_size=7)
    other_seed = gather(model, loader, {"features"}, 4, "cpu", per_class=100, seed=6).features
    assert not torch.equal(other_seed[:12], features[:12])
    slices.labels[:3, 14:, 14:] = 0  # without the rare class: the cap
    labels = gather(model, loader, {"features"}, 4, "cpu", per_class=100, seed=5).feature_labels
    assert torch.bincount(labels).tolist() == [100, 100, 100]


def test_sample_draws_the_smallest_keys_of_each_class():
    sample = BalancedSample(2, 3, seed=1)
    feats = torch.arange(2 * 4 * 5, dtype=torch.float32).view(2, 4, 5)[:, None]  # (B=2, D=1, 4, 5): the pixel id
    labels = torch.zeros(2, 4, 5, dtype=torch.long)
    labels[1, 2:] = 1
    sample.add(feats[:1], labels[:1], torch.tensor([0]))
    sample.add(feats[1:], labels[1:], torch.tensor([1]))
    got, got_labels = sample.result()
    keys = pixel_keys(torch.tensor([0, 1]), 20, 1).view(-1)
    flat_labels = labels.view(-1)
    for c in (0, 1):
        ids = torch.nonzero(flat_labels == c).view(-1)
        expected = ids[torch.argsort(keys[ids])[:3]].double()
        assert torch.equal(got[got_labels == c, 0], expected)
