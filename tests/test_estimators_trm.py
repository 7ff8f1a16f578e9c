"""trm's ``score``: which map weights the loss (leep, nce or the dataset's ground-truth risk), and unchanged keys."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from benchmarks.config import Cell
from datasets.slices import SliceDataset, SliceSet
from methods import METHODS
from methods.base import MethodConfigError, RunContext
from methods.estimators import estimate_maps, map_names
from methods.transferability import INVERSE_FLOOR, expand_windows, location_weights
from methods.trm import SCORES, WEIGHT_KEY

CPU = torch.device("cpu")


def _cell(**params) -> Cell:
    return Cell("default", "phantom", "01-t2-WT", "01-t1-WT", "trm", "unet", 0, method_params=params)


def test_score_choices_are_the_map_estimators_and_the_oracle():
    assert SCORES == (*map_names(), "oracle")
    assert METHODS.get("trm")().params["score"] == "leep"
    assert METHODS.get("trm").hparams["score"].space.choices == ("leep",)  # tuning keeps the default
    with pytest.raises(MethodConfigError, match="score"):
        METHODS.get("trm")(score="logme")  # global only: no map


def test_default_score_keeps_every_existing_trm_key():
    # keys of these cells before trm had a score (commit c189dae)
    before = {"": "1ba10d922e32f58e", "alpha": "2efa8992ff2244df", "pixel": "fb4fb6d73d24b90e"}
    assert _cell().key == _cell(score="leep").key == before[""]
    assert _cell(alpha=2.0).key == _cell(alpha=2.0, score="leep").key == before["alpha"]
    assert _cell(granularity="pixel", weighting="linear").key == before["pixel"]
    assert _cell(score="nce").key not in before.values()
    assert _cell(score="nce").key != _cell(score="oracle").key


def test_default_score_keeps_the_map_cache_name(tmp_path):
    trm = METHODS.get("trm")()
    trm.run = RunContext(None, None, None, CPU, cache_dir=tmp_path)
    model, data = _model(2), SliceDataset(_slices())
    old = {k: v for k, v in trm.params.items() if k != "score"}  # the params trm hashed before it had a score
    h = hashlib.sha1(repr(sorted(old.items())).encode())
    for tensor in model.state_dict().values():
        h.update(tensor.detach().cpu().numpy().tobytes())
    h.update(data.slices.images.tobytes())
    h.update(data.slices.labels.tobytes())
    assert trm._cache_path(model, data, None).name == f"{h.hexdigest()[:20]}.npz"


def _slices(n: int = 6, size: int = 32) -> SliceSet:
    rng = np.random.default_rng(0)
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 8:18, 10:22] = 1
    images = (labels[:, None].astype(np.float32) + rng.normal(0, 0.8, (n, 1, size, size))).astype(np.float32)
    return SliceSet.of_volume(images, labels)


def _model(k: int):
    from benchmarks.backbones import build_backbone

    torch.manual_seed(0)
    return build_backbone("unet", 1, k).eval().requires_grad_(False)


def _prepare(data: SliceDataset, risk: np.ndarray | None = None, k: int = 3, **params) -> np.ndarray:
    trm = METHODS.get("trm")(**params)
    trm.prepare(RunContext(_model(k), _model(2), data, CPU, risk_maps=risk))
    assert set(trm.result_columns()) == {"leep", "nce"}
    return data.maps[WEIGHT_KEY].astype(np.float64)


def test_nce_location_map_weights_by_exp_minus_window_nce():
    slices = _slices()
    weights = _prepare(SliceDataset(slices), score="nce", stride=4)
    nce_map = torch.from_numpy(estimate_maps(_model(3), slices, ["nce"], stride=4, num_classes=2)["nce"])
    expected = location_weights(nce_map, (32, 32), 4).numpy()
    assert all(np.array_equal(weights[0], w) for w in weights)
    np.testing.assert_allclose(weights[0], expected, rtol=2e-3)  # float16 storage
    assert not np.allclose(weights[0], _prepare(SliceDataset(slices), stride=4)[0], rtol=1e-2)  # not LEEP's


def test_nce_pixel_weights_are_inverse_conditional_at_the_hard_prediction():
    slices = _slices()
    weights = _prepare(SliceDataset(slices), score="nce", granularity="pixel")
    with torch.no_grad():
        pred = _model(3)(torch.from_numpy(slices.images)).argmax(1).numpy()
    counts = np.zeros((2, 3))
    np.add.at(counts, (slices.labels.reshape(-1), pred.reshape(-1)), 1)
    cond = counts / counts.sum(0, keepdims=True).clip(min=1)  # P(y|z)
    expected = 1 / np.maximum(cond[slices.labels, pred], INVERSE_FLOOR)
    np.testing.assert_allclose(weights, expected, rtol=2e-3)


def test_oracle_without_risk_maps_is_a_one_line_config_error():
    message = "trm.score=oracle needs ground-truth risk maps (brainsim dial transfers)"
    with pytest.raises(MethodConfigError) as info:
        _prepare(SliceDataset(_slices()), score="oracle")
    assert str(info.value) == message
    assert METHODS.get("trm")(score="oracle").needs_risk_maps() and not METHODS.get("trm")().needs_risk_maps()
    bad = SliceDataset(_slices())
    with pytest.raises(MethodConfigError, match=r"must lie in \[0, 1\]"):
        _prepare(bad, np.full(bad.slices.labels.shape, 1.5, np.float32), score="oracle")


def test_oracle_weights_follow_the_same_rule_from_e_equal_one_minus_risk():
    slices = _slices()
    risk = np.zeros(slices.labels.shape, np.float32)
    risk[:, 4:12, 4:8] = 1.0  # whole windows at risk
    risk[:3, 20:22, 20:24] = 1.0  # half of a window in half of the slices: mean risk 1/4
    weights = _prepare(SliceDataset(slices), risk, score="oracle", stride=4)
    window_risk = torch.from_numpy(risk).double().reshape(6, 8, 4, 8, 4).mean((0, 2, 4))
    expected = expand_windows(1 / (1 - window_risk).clamp(INVERSE_FLOOR, 1), (32, 32), 4).numpy()
    np.testing.assert_allclose(weights[0], expected, rtol=2e-3)
    assert weights[0, 5, 5] == pytest.approx(1 / INVERSE_FLOOR, rel=2e-3) and weights[0, 21, 21] == pytest.approx(
        4 / 3, rel=2e-3
    )
    got = _prepare(SliceDataset(slices), risk * 0.5, score="oracle", granularity="pixel", weighting="linear", alpha=2.0)
    np.testing.assert_allclose(got, 1 + 2.0 * risk * 0.5, rtol=2e-3)  # W = 1 + alpha R, R = 1 - e
