"""methods.transferability, its kernels and its driver against independent float64 numpy references (plain loops).

Set NTBENCH_COMPILE=1 to run the same checks through the torch.compile path (slow: compiles per shape).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from methods import leep_driver as driver
from methods import leep_kernels as kernels
from methods import transferability as tr

EPS = 1e-12
# run on a lent GPU by tests/perf/device_check.sh; skipped on CPU-only machines (CI)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
# (batch, K source classes, C target classes, spatial shape, zero-mass source class or None)
CASES = [
    (2, 5, 3, (7, 9), None),
    (3, 2, 4, (4, 5, 6), 1),
    (1, 4, 4, (33,), 0),
    (4, 3, 2, (6, 6), 2),
    (2, 6, 7, (3, 4, 5), 5),
]


# --- numpy reference (float64, plain loops) ---------------------------------------------------------------


def ref_joint(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    k = probs.shape[1]
    per_pixel = np.moveaxis(probs.astype(np.float64), 1, -1).reshape(-1, k)
    joint = np.zeros((num_classes, k))
    np.add.at(joint, labels.reshape(-1), per_pixel)
    return joint


def ref_conditional(joint: np.ndarray) -> np.ndarray:
    p = joint / joint.sum()
    out = np.zeros_like(p)
    for z in range(p.shape[1]):
        p_z = p[:, z].sum()
        for y in range(p.shape[0]):
            out[y, z] = p[y, z] / max(p_z, EPS)
    return out


def ref_expected(probs: np.ndarray, labels: np.ndarray, cond: np.ndarray) -> np.ndarray:
    k = probs.shape[1]
    per_pixel = np.moveaxis(probs.astype(np.float64), 1, -1).reshape(-1, k)
    e = np.array([sum(cond[y, z] * row[z] for z in range(k)) for row, y in zip(per_pixel, labels.reshape(-1))])
    return e.reshape(labels.shape)


def ref_leep(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    e = ref_expected(probs, labels, ref_conditional(ref_joint(probs, labels, num_classes)))
    return float(np.mean(np.log(np.maximum(e, EPS))))


def ref_risk(e: np.ndarray, kind: str) -> np.ndarray:
    if kind == "complement":
        return 1.0 - e
    out = np.zeros_like(e, dtype=np.float64)
    for i in range(e.shape[0]):
        r = -np.log(np.maximum(e[i].astype(np.float64), EPS))
        span = r.max() - r.min()
        out[i] = (r - r.min()) / span if span > 0 else 0.0
    return out


def ref_nce(pred: np.ndarray, labels: np.ndarray, k: int, c: int) -> float:
    counts = np.zeros((c, k))
    np.add.at(counts, (labels.reshape(-1), pred.reshape(-1)), 1.0)
    p = counts / counts.sum()
    total = 0.0
    for y in range(c):
        for z in range(k):
            if p[y, z] > 0:
                total += p[y, z] * np.log(p[y, z] / p[:, z].sum())
    return total


# --- inputs -----------------------------------------------------------------------------------------------


def make_inputs(
    batch: int, k: int, c: int, spatial: tuple[int, ...], dead: int | None, seed: int = 0, dtype=torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand((batch, k, *spatial), generator=gen, dtype=torch.float64) ** 3
    if dead is not None:
        probs[:, dead] = 0  # a source class with zero mass
    probs = (probs / probs.sum(1, keepdim=True)).to(dtype)
    labels = torch.randint(0, c, (batch, *spatial), generator=gen)
    return probs, labels


@pytest.fixture(params=CASES, ids=lambda case: f"B{case[0]}K{case[1]}C{case[2]}S{'x'.join(map(str, case[3]))}")
def case(request):
    batch, k, c, spatial, dead = request.param
    probs, labels = make_inputs(batch, k, c, spatial, dead)
    return probs, labels, c, dead


# --- the maths --------------------------------------------------------------------------------------------


def test_joint_conditional_expected_leep_match_reference(case):
    probs, labels, c, dead = case
    p, y = probs.numpy(), labels.numpy()
    joint = tr.leep_joint(probs, labels, c)
    assert joint.dtype == torch.float64 and joint.shape == (c, probs.shape[1])
    np.testing.assert_allclose(joint.numpy(), ref_joint(p, y, c), rtol=1e-6, atol=1e-6)

    cond = tr.leep_conditional(joint)
    ref_cond = ref_conditional(ref_joint(p, y, c))
    np.testing.assert_allclose(cond.numpy(), ref_cond, atol=1e-6)
    if dead is not None:
        assert torch.all(cond[:, dead] == 0)

    e = tr.expected_empirical_prediction(probs, labels, cond)
    assert e.shape == labels.shape and bool((e > 0).all()) and bool((e <= 1 + 1e-12).all())
    np.testing.assert_allclose(e.numpy(), ref_expected(p, y, ref_cond), atol=1e-6)

    assert tr.segmentation_leep(probs, labels, c) == pytest.approx(ref_leep(p, y, c), abs=1e-6)


def _assert_float32_path_matches(probs32: torch.Tensor, labels: torch.Tensor, c: int, **kwargs) -> None:
    """The four functions on float32 probabilities (any device, any integer label dtype) vs the reference."""
    p, y = probs32.cpu().numpy(), labels.cpu().long().numpy()  # reference on the very float32 values
    n = labels.numel()
    joint = tr.leep_joint(probs32, labels, c, **kwargs)
    assert joint.device == probs32.device
    np.testing.assert_allclose(joint.cpu().numpy() / n, ref_joint(p, y, c) / n, atol=1e-6)
    cond = tr.leep_conditional(joint)
    ref_cond = ref_conditional(ref_joint(p, y, c))
    np.testing.assert_allclose(cond.cpu().numpy(), ref_cond, atol=1e-6)
    e = tr.expected_empirical_prediction(probs32, labels, cond, **kwargs)
    np.testing.assert_allclose(e.cpu().numpy(), ref_expected(p, y, ref_cond), atol=1e-6)
    assert tr.segmentation_leep(probs32, labels, c, **kwargs) == pytest.approx(ref_leep(p, y, c), abs=1e-6)


def test_float32_and_uint8_inputs_match_reference(case):
    probs, labels, c, _ = case
    _assert_float32_path_matches(probs.float(), labels.to(torch.uint8), c)


def test_half_precision_and_single_class_inputs():
    probs, labels = make_inputs(2, 3, 1, (6, 7), None)
    assert tr.segmentation_leep(probs, labels, 1) == pytest.approx(0.0, abs=1e-9)  # one class: e = 1
    np.testing.assert_allclose(tr.leep_joint(probs, labels, 1).numpy(), ref_joint(probs.numpy(), labels.numpy(), 1))
    probs, labels = make_inputs(2, 3, 4, (6, 7), 1)
    half = probs.half()
    p = half.float().numpy()
    assert tr.segmentation_leep(half, labels, 4) == pytest.approx(ref_leep(p, labels.numpy(), 4), abs=1e-6)


def test_joint_adds_over_batches(case):
    probs, labels, c, _ = case
    parts = sum(tr.leep_joint(probs[i : i + 1], labels[i : i + 1], c) for i in range(probs.shape[0]))
    np.testing.assert_allclose(parts.numpy(), tr.leep_joint(probs, labels, c).numpy(), atol=1e-9)


def test_blocks_split_large_images_and_non_contiguous_input(monkeypatch):
    monkeypatch.setattr(kernels, "block_pixels", lambda device: 64)  # force many blocks, some inside one image
    probs, labels = make_inputs(3, 4, 3, (10, 13), 1, seed=3)
    p, y = probs.numpy(), labels.numpy()
    np.testing.assert_allclose(tr.leep_joint(probs, labels, 3).numpy(), ref_joint(p, y, 3), atol=1e-9)
    assert tr.segmentation_leep(probs, labels, 3) == pytest.approx(ref_leep(p, y, 3), abs=1e-9)
    channel_last = probs.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert tr.segmentation_leep(channel_last, labels, 3) == pytest.approx(ref_leep(p, y, 3), abs=1e-9)
    monkeypatch.setattr(kernels, "block_pixels", lambda device: 7)  # blocks that do not divide the image
    cond = tr.leep_conditional(tr.leep_joint(probs, labels, 3))
    e = tr.expected_empirical_prediction(probs, labels, cond)
    np.testing.assert_allclose(e.numpy(), ref_expected(p, y, cond.numpy()), atol=1e-9)


def test_conditional_zero_mass_columns_are_zero_not_nan():
    joint = torch.tensor([[2.0, 0.0, 1.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    cond = tr.leep_conditional(joint)
    assert not torch.isnan(cond).any()
    np.testing.assert_allclose(cond.numpy(), [[1.0, 0.0, 0.25], [0.0, 0.0, 0.75]])


@pytest.mark.parametrize("kind", ["complement", "neglog"])
def test_risk_map_matches_reference(case, kind):
    probs, labels, c, _ = case
    cond = tr.leep_conditional(tr.leep_joint(probs, labels, c))
    e = tr.expected_empirical_prediction(probs, labels, cond)
    risk = tr.risk_map(e, kind)
    np.testing.assert_allclose(risk.numpy(), ref_risk(e.numpy(), kind), atol=1e-6)
    assert bool((risk >= 0).all()) and bool((risk <= 1).all())


def test_neglog_constant_image_gives_zero_risk():
    e = torch.stack([torch.full((4, 4), 0.5), torch.linspace(0.1, 1, 16).view(4, 4)])
    risk = tr.risk_map(e, "neglog")
    assert torch.all(risk[0] == 0)
    assert risk[1].min() == 0 and risk[1].max() == pytest.approx(1)


@pytest.mark.parametrize(
    ("weighting", "alpha", "beta", "expected"),
    [
        ("linear", 1.0, 2.0, lambda r: 1 + r),
        ("linear", 0.5, 2.0, lambda r: 1 + 0.5 * r),
        ("exp", 1.0, 2.0, lambda r: 2.0**r),
        ("exp", 1.0, 3.5, lambda r: 3.5**r),
        ("none", 1.0, 2.0, np.ones_like),
    ],
)
def test_pixel_weights(weighting, alpha, beta, expected):
    risk = torch.rand(3, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = tr.pixel_weights(risk, weighting, alpha, beta)
    np.testing.assert_allclose(weights.numpy(), expected(risk.numpy()), atol=1e-6)


def test_nce_matches_reference_and_streams(case):
    probs, labels, c, _ = case
    k = probs.shape[1]
    pred = probs.argmax(1)
    ref = ref_nce(pred.numpy(), labels.numpy(), k, c)
    assert tr.segmentation_nce(pred, labels, k, c) == pytest.approx(ref, abs=1e-6)
    counts = sum(tr.nce_counts(pred[i], labels[i], k, c) for i in range(pred.shape[0]))
    assert counts.dtype == torch.int64 and int(counts.sum()) == labels.numel()
    assert tr.nce_from_counts(counts) == pytest.approx(ref, abs=1e-6)


@CUDA
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_cuda_path_matches_reference(case, compile):
    probs, labels, c, _ = case
    gp, gy = probs.float().cuda(), labels.cuda()
    _assert_float32_path_matches(gp, gy, c, compile=compile)
    with pytest.raises(ValueError, match="labels must lie in"):
        tr.segmentation_leep(gp, gy + c, c, compile=compile)


# --- streaming driver -------------------------------------------------------------------------------------


class Slices(Dataset):
    def __init__(self, n: int, size: tuple[int, int], num_classes: int) -> None:
        gen = torch.Generator().manual_seed(5)
        self.images = torch.randn((n, 1, *size), generator=gen)
        self.labels = torch.randint(0, num_classes, (n, *size), generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return {"image": self.images[i], "label": self.labels[i], "index": i}


def tiny_model(k: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, k, 1)).eval()


@pytest.mark.parametrize("batch_size", [1, 3, 7])
def test_driver_streams_like_one_big_batch(batch_size):
    k, c = 5, 3
    data, model = Slices(10, (8, 9), c), tiny_model(k)
    with torch.no_grad():
        probs = torch.softmax(model(data.images), 1)
    joint_ref = tr.leep_joint(probs, data.labels, c)
    cond = tr.leep_conditional(joint_ref)
    e = tr.expected_empirical_prediction(probs, data.labels, cond)

    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    joint, counts = driver.compute_joint(model, loader, c, "cpu")
    np.testing.assert_allclose(joint.numpy(), joint_ref.numpy(), rtol=1e-6, atol=1e-6)
    assert torch.equal(counts, tr.nce_counts(probs.argmax(1), data.labels, k, c))

    shuffled = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(2))
    for risk, weighting in [("complement", "linear"), ("neglog", "exp")]:
        maps, leep = driver.compute_risk_maps(model, shuffled, cond, risk, weighting, 1.0, 2.0, device="cpu")
        assert maps.dtype == np.float16 and maps.shape == (10, 8, 9)
        expected = tr.pixel_weights(tr.risk_map(e, risk), weighting, 1.0, 2.0)
        np.testing.assert_allclose(maps.astype(np.float64), expected.numpy(), atol=2e-3)  # float16 storage
        assert leep == pytest.approx(tr.segmentation_leep(probs, data.labels, c), abs=1e-6)


@CUDA
def test_driver_on_cuda_matches_cpu():
    k, c = 5, 3
    data, model = Slices(10, (8, 9), c), tiny_model(k)
    loader = DataLoader(data, batch_size=3, shuffle=False)
    joint, counts = driver.compute_joint(model, loader, c, "cpu")
    maps, leep = driver.compute_risk_maps(model, loader, tr.leep_conditional(joint), device="cpu")
    model.cuda()
    joint_gpu, counts_gpu = driver.compute_joint(model, loader, c, "cuda")
    assert joint_gpu.device.type == "cuda" and torch.equal(counts_gpu.cpu(), counts)
    np.testing.assert_allclose(joint_gpu.cpu().numpy(), joint.numpy(), rtol=1e-5)
    maps_gpu, leep_gpu = driver.compute_risk_maps(model, loader, tr.leep_conditional(joint_gpu), device="cuda")
    np.testing.assert_allclose(maps_gpu.astype(np.float64), maps.astype(np.float64), atol=2e-3)
    assert leep_gpu == pytest.approx(leep, abs=1e-5)


def test_driver_rejects_bad_labels_and_incomplete_loaders():
    data, model = Slices(6, (5, 5), 3), tiny_model(4)
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        driver.compute_joint(model, DataLoader(data, batch_size=4), 2, "cpu")
    cond = tr.leep_conditional(torch.rand(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="labels must lie in 0..1"):
        driver.compute_risk_maps(model, DataLoader(data, batch_size=4), cond[:2], device="cpu")
    with pytest.raises(ValueError, match="every dataset index"):
        driver.compute_risk_maps(model, DataLoader(data, batch_size=4, drop_last=True), cond, device="cpu")
    with pytest.raises(ValueError, match="source classes"):
        driver.compute_risk_maps(model, DataLoader(data, batch_size=4), cond[:, :3], device="cpu")
    with pytest.raises(ValueError, match="no batches"):
        driver.compute_joint(model, [], 3, "cpu")


# --- bad inputs -------------------------------------------------------------------------------------------


def _bad_inputs():
    probs, labels = make_inputs(2, 3, 4, (5, 6), None)
    negative = probs.clone()
    negative[0, 1, 0, 0] += negative[0, 0, 0, 0] + 0.1  # channel sum stays 1
    negative[0, 0, 0, 0] = -0.1
    nan = probs.clone()
    nan[1, 2, 3, 4] = float("nan")
    high, low = labels.clone(), labels.clone()
    high[0, 0, 0], low[1, 2, 3] = 4, -1
    return [
        (negative, labels, 4, "< 0"),
        (nan, labels, 4, "NaN"),
        (probs * 1.01, labels, 4, "sum to 1"),
        (probs, high, 4, r"labels must lie in 0\.\.3"),
        (probs, low, 4, r"labels must lie in 0\.\.3"),
        (probs, labels[:, :4], 4, "does not match"),
        (probs[0], labels, 4, "does not match"),
        (probs, labels.double(), 4, "integer"),
        (probs, labels, 0, "positive int"),
        (probs[:0], labels[:0], 4, "empty"),
    ]


@pytest.mark.parametrize("index", range(10))
def test_bad_inputs_raise_value_error(index):
    probs, labels, c, message = _bad_inputs()[index]
    for fn in (tr.leep_joint, tr.segmentation_leep):
        with pytest.raises(ValueError, match=message):
            fn(probs, labels, c)


def test_small_label_dtypes_validate_their_range():
    probs, labels = make_inputs(2, 3, 4, (5, 6), None)
    shifted = (labels % 3 + 1).to(torch.uint8)  # 1..3: a uint8 minimum above 0 must not wrap when negated
    assert float(tr.leep_joint(probs, shifted, 4)[0].abs().max()) < 1e-9
    with pytest.raises(ValueError, match=r"found range 1\.\.3"):
        tr.leep_joint(probs, shifted, 3)


def test_validate_false_skips_value_checks_only():
    probs, labels = make_inputs(2, 3, 4, (5, 6), None)
    tr.leep_joint(probs * 1.01, labels, 4, validate=False)
    with pytest.raises(ValueError, match="does not match"):
        tr.leep_joint(probs, labels[:, :4], 4, validate=False)


def test_other_bad_inputs():
    probs, labels = make_inputs(2, 3, 4, (5, 6), None)
    cond = tr.leep_conditional(tr.leep_joint(probs, labels, 4))
    with pytest.raises(ValueError, match="shape"):
        tr.expected_empirical_prediction(probs, labels, cond[:, :2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tr.expected_empirical_prediction(probs, labels, cond * 5)
    with pytest.raises(ValueError, match="labels must lie"):
        tr.expected_empirical_prediction(probs, labels, cond[:3])
    with pytest.raises(ValueError, match="positive total"):
        tr.leep_conditional(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="risk kind"):
        tr.risk_map(torch.rand(2, 3), "log")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tr.risk_map(torch.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="weighting"):
        tr.pixel_weights(torch.rand(2, 3), "square")
    with pytest.raises(ValueError, match="positive"):
        tr.pixel_weights(torch.rand(2, 3), "exp", beta=0.0)
    pred = probs.argmax(1)
    with pytest.raises(ValueError, match="source_pred must lie"):
        tr.nce_counts(pred + 3, labels, 3, 4)
    with pytest.raises(ValueError, match="integer"):
        tr.nce_counts(probs[:, 0], labels, 3, 4)
    with pytest.raises(ValueError, match="shape"):
        tr.segmentation_nce(pred[0], labels, 3, 4)


def test_auto_compiles_only_large_cpu_inputs(monkeypatch):
    monkeypatch.delenv(kernels.COMPILE_ENV, raising=False)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not kernels.use_compile(None, kernels.COMPILE_MIN_PIXELS - 1, cpu)
    assert kernels.use_compile(None, kernels.COMPILE_MIN_PIXELS, cpu)
    assert not kernels.use_compile(None, 1 << 40, cuda)  # never pays back on a GPU (tests/perf)
    assert kernels.use_compile(True, 1, cpu) and not kernels.use_compile(False, 1 << 40, cpu)
    monkeypatch.setenv(kernels.COMPILE_ENV, "1")
    assert kernels.use_compile(None, 1, cuda)
    monkeypatch.setenv(kernels.COMPILE_ENV, "0")
    assert not kernels.use_compile(None, 1 << 40, cpu)


def test_compile_env_is_validated(monkeypatch):
    monkeypatch.setenv(kernels.COMPILE_ENV, "maybe")
    probs, labels = make_inputs(1, 3, 2, (4, 4), None)
    with pytest.raises(ValueError, match=kernels.COMPILE_ENV):
        tr.leep_joint(probs, labels, 2)


# --- inputs without background, rare background in float32 (issue 11: no row is a difference) --------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_inputs_without_background_match_reference(dtype):
    probs, labels = make_inputs(3, 4, 3, (9, 11), 2, seed=5, dtype=dtype)
    labels = labels.clamp(min=1)  # no pixel of class 0
    p, y = probs.double().numpy(), labels.numpy()
    joint = tr.leep_joint(probs, labels, 3)
    assert torch.all(joint[0] == 0)  # exactly zero, never -4e-16
    np.testing.assert_allclose(joint.numpy(), ref_joint(p, y, 3), rtol=1e-6, atol=1e-9)
    cond = tr.leep_conditional(joint)  # raised "joint must be non-negative" when row 0 was a difference
    np.testing.assert_allclose(cond.numpy(), ref_conditional(ref_joint(p, y, 3)), atol=1e-7)
    tol = 1e-9 if dtype == torch.float64 else 1e-6
    assert tr.segmentation_leep(probs, labels, 3) == pytest.approx(ref_leep(p, y, 3), abs=tol)
    loc = tr.location_leep_map(probs, labels, 3, 3)
    np.testing.assert_allclose(loc.numpy(), ref_location_map(p, y, 3, 3), atol=1e-9 if tol == 1e-9 else 1e-5)


def test_float32_background_row_is_accurate_when_background_is_rare():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(2, 4, 128, 128, generator=gen), 1)
    labels = torch.randint(1, 3, (2, 128, 128), generator=gen)
    labels[0, :2, :3] = 0  # six background pixels among 32768
    ref = ref_joint(probs.double().numpy(), labels.numpy(), 3)
    joint = tr.leep_joint(probs, labels, 3)
    np.testing.assert_allclose(joint[0].numpy(), ref[0], rtol=1e-5)  # the difference of totals was ~1e-3 off
    cond = tr.leep_conditional(joint)
    e = tr.expected_empirical_prediction(probs, labels, cond)[labels == 0].double().numpy()
    ref_e = ref_expected(probs.double().numpy(), labels.numpy(), ref_conditional(ref)).reshape(labels.shape)
    np.testing.assert_allclose(e, ref_e[labels.numpy() == 0], rtol=1e-5)


# --- location-level LEEP map (Tan et al., ICIP 2023) --------------------------------------------------------


def ref_window_leep(x: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """LEEP of samples x (n, K), labels y (n,), loop by loop as Tan et al.'s `LEEP` (float64)."""
    k = x.shape[1]
    p_yz, p_z = np.zeros((num_classes, k)), np.zeros(k)
    for xi, yi in zip(x, y):
        p_z += xi
        p_yz[yi] += xi
    cond = np.zeros((num_classes, k))
    for z in range(k):
        if p_z[z] > 0:
            cond[:, z] = p_yz[:, z] / p_z[z]
    return float(np.mean([np.log(max(sum(cond[yi, z] * xi[z] for z in range(k)), EPS)) for xi, yi in zip(x, y)]))


def ref_location_map(probs: np.ndarray, labels: np.ndarray, num_classes: int, stride: int) -> np.ndarray:
    n, k, height, width = probs.shape
    out = np.zeros((height // stride, width // stride))
    for a in range(height // stride):
        for b in range(width // stride):
            rows, cols = slice(a * stride, (a + 1) * stride), slice(b * stride, (b + 1) * stride)
            x = probs[:, :, rows, cols].astype(np.float64).transpose(0, 2, 3, 1).reshape(-1, k)
            out[a, b] = ref_window_leep(x, labels[:, rows, cols].reshape(-1), num_classes)
    return out


@pytest.mark.parametrize(
    ("batch", "k", "c", "shape", "dead", "stride"),
    [(3, 5, 3, (11, 13), 1, 1), (4, 2, 4, (8, 8), None, 2), (2, 4, 2, (10, 7), 0, 3), (5, 3, 3, (12, 12), 2, 5)],
)
def test_location_leep_map_matches_per_window_reference(batch, k, c, shape, dead, stride):
    probs, labels = make_inputs(batch, k, c, shape, dead, seed=stride)
    ref = ref_location_map(probs.numpy(), labels.numpy(), c, stride)
    got = tr.location_leep_map(probs, labels, c, stride)
    assert got.dtype == torch.float64 and got.shape == (shape[0] // stride, shape[1] // stride)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-9, rtol=0)
    got32 = tr.location_leep_map(probs.float(), labels.to(torch.uint8), c, stride)
    np.testing.assert_allclose(
        got32.numpy(), ref_location_map(probs.float().numpy(), labels.numpy(), c, stride), atol=1e-5
    )


def test_location_map_streams_over_images_and_batches(monkeypatch):
    probs, labels = make_inputs(7, 3, 3, (9, 10), None, seed=9)
    whole = tr.location_leep_map(probs, labels, 3, 2)
    monkeypatch.setattr(kernels, "block_pixels", lambda device: 1)  # one image per chunk
    np.testing.assert_allclose(tr.location_leep_map(probs, labels, 3, 2).numpy(), whole.numpy(), atol=1e-12)
    joint = sum(tr.location_joint(probs[i : i + 2], labels[i : i + 2], 3, 2) for i in range(0, 7, 2))
    cond = tr.location_conditional(joint)
    log_sum = sum(tr.location_log_e_sum(probs[i : i + 3], labels[i : i + 3], cond, 2) for i in range(0, 7, 3))
    np.testing.assert_allclose((log_sum / (7 * 4)).numpy(), whole.numpy(), atol=1e-12)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_driver_location_map_matches_one_big_batch(batch_size):
    data, model = Slices(9, (8, 10), 3), tiny_model(4)
    with torch.no_grad():
        probs = torch.softmax(model(data.images), 1)
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    got = driver.compute_location_map(model, loader, 3, 3, "cpu")
    np.testing.assert_allclose(got.numpy(), tr.location_leep_map(probs, data.labels, 3, 3).numpy(), atol=1e-6)


@pytest.mark.parametrize("stride", [0, -1, 9, True, 2.0])
def test_location_map_rejects_bad_strides(stride):
    probs, labels = make_inputs(2, 3, 2, (8, 9), None)
    with pytest.raises(ValueError, match="stride"):
        tr.location_leep_map(probs, labels, 2, stride)


def test_location_map_needs_2d_images():
    probs, labels = make_inputs(2, 3, 2, (4, 5, 6), None)
    with pytest.raises(ValueError, match="2D"):
        tr.location_leep_map(probs, labels, 2, 2)


def test_location_weights_are_inverse_geometric_mean_and_fill_the_remainder():
    leep = torch.tensor([[-0.5, -1.0], [-2.0, -0.1]], dtype=torch.float64)
    w = tr.location_weights(leep, (8, 7), 3)  # windows cover rows 0..5 and columns 0..5
    assert w.shape == (8, 7)
    expected = np.exp(-leep.numpy())  # Tan et al.'s is_weight_map: exp(-LEEP)
    nearest_row = [0, 0, 0, 1, 1, 1, 1, 1]
    nearest_col = [0, 0, 0, 1, 1, 1, 1]
    np.testing.assert_allclose(w.numpy(), expected[np.ix_(nearest_row, nearest_col)], rtol=1e-12)
    linear = tr.location_weights(leep, (6, 6), 3, "complement", "linear", 2.0)
    np.testing.assert_allclose(linear.numpy()[::3, ::3], 1 + 2 * (1 - np.exp(leep.numpy())), rtol=1e-12)


def test_inverse_weights_from_e_are_capped():
    e = torch.tensor([[1.0, 0.5, 1e-6]], dtype=torch.float64)
    np.testing.assert_allclose(tr.weights_from_e(e, weighting="inverse").numpy(), [[1.0, 2.0, 1 / tr.INVERSE_FLOOR]])
    with pytest.raises(ValueError, match="weights_from_e"):
        tr.pixel_weights(e, "inverse")


@CUDA
def test_location_map_on_cuda_matches_reference():
    probs, labels = make_inputs(3, 4, 3, (12, 10), 1, seed=4)
    ref = ref_location_map(probs.numpy(), labels.numpy(), 3, 4)
    np.testing.assert_allclose(tr.location_leep_map(probs.cuda(), labels.cuda(), 3, 4).cpu().numpy(), ref, atol=1e-9)
    got32 = tr.location_leep_map(probs.float().cuda(), labels.cuda(), 3, 4).cpu().numpy()
    np.testing.assert_allclose(got32, ref_location_map(probs.float().numpy(), labels.numpy(), 3, 4), atol=1e-5)
