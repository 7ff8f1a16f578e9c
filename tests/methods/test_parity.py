"""Each baseline's penalty against an independent, plain transcription of its reference code's formula.

References (docs/baselines.md has the table):
- l2sp, delta: lixingjian/DELTA train.py, ``reg_l2sp``, ``reg_fea_map``, ``reg_classifier`` and
  ``loss = loss_main + alpha * loss_feature + beta * loss_classifier``;
- bss: thuml/Transfer-Learning-Library tllib/regularization/bss.py ``BatchSpectralShrinkage.forward``;
- lwf: thuml/Transfer-Learning-Library tllib/regularization/knowledge_distillation.py (KL, batchmean) and
  examples/task_adaptation/image_classification/lwf.py ``loss = tgt_loss + trade_off * kd(y_s, label_s)``;
- lp-ft: AnanyaKumar/transfer_learning unlabeled_extrapolation/log_reg_sk.py (sklearn LogisticRegression on
  globally standardised features, weights folded back by ``inv_normalize_weights``);
- freeze: Yosinski et al. 2014 (frozen layers keep their source weights; no penalty).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from methods.base import METHODS, RunContext
from methods.losses import base_loss

CPU = torch.device("cpu")


def perturb(model: torch.nn.Module, scale: float = 0.01, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def test_l2sp_matches_delta_reg_l2sp(pair, batch) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)
    method = METHODS.get("l2sp")(alpha=0.3, beta=0.2)
    method.prepare(RunContext(source, target, [], CPU))
    perturb(target)
    b = batch(2)
    logits = target(b["image"])
    src = dict(source.named_parameters())
    # reg_l2sp: sum over non-fc params of 0.5 * torch.norm(param - source) ** 2; reg_classifier: 0.5 * norm(fc) ** 2
    params = [(n, p.detach().double()) for n, p in target.named_parameters()]
    reg_l2sp = sum(0.5 * torch.norm(p - src[n].double()) ** 2 for n, p in params if not n.startswith("head."))
    reg_classifier = sum(0.5 * torch.norm(p) ** 2 for n, p in params if n.startswith("head."))
    got = method.loss(b, logits, target) - base_loss(logits, b["label"])
    assert got.item() == pytest.approx((0.3 * reg_l2sp + 0.2 * reg_classifier).item(), rel=1e-5)


def test_delta_matches_delta_reg_fea_map(pair, batch) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)
    method = METHODS.get("delta")(alpha=0.01, beta=0.05)
    method.prepare(RunContext(source, target, [], CPU))
    perturb(target.body, scale=0.02)
    maps: dict[str, list[torch.Tensor]] = {"s": [], "t": []}
    for key, model in (("s", source), ("t", target)):
        for name in model.encoder_stages:
            model.get_submodule(name).register_forward_hook(lambda m, a, o, key=key: maps[key].append(o.detach()))
    b = batch(2, batch=3)
    logits = target(b["image"])
    source(b["image"])
    # reg_fea_map: fea_loss += 0.5 * (torch.norm(fm_tgt - fm_src.detach()) ** 2), per hooked layer
    fea_loss = sum(0.5 * torch.norm(t.double() - s.double()) ** 2 for s, t in zip(maps["s"], maps["t"]))
    cls_loss = sum(0.5 * torch.norm(p.double()) ** 2 for p in target.head.parameters())
    maps["s"].clear()
    maps["t"].clear()
    got = method.loss(b, logits, target) - base_loss(logits, b["label"])
    expected = 0.01 * fea_loss + 0.05 * cls_loss
    assert expected.item() > 1.0  # a summed (not averaged) distance at this scale
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def tllib_bss(feature: torch.Tensor, k: int) -> torch.Tensor:
    """tllib BatchSpectralShrinkage.forward, line by line."""
    result = 0
    u, s, v = torch.svd(feature.t())
    num = s.size(0)
    for i in range(k):
        result += torch.pow(s[num - 1 - i], 2)
    return result


@pytest.mark.parametrize(("b", "c", "k"), [(8, 16, 1), (8, 16, 3), (1, 16, 1), (2, 16, 2), (3, 3, 3)])
def test_bss_matches_tllib_including_small_batches(pair, batch, b: int, c: int, k: int) -> None:
    from methods.bss import bss_penalty

    feature = torch.from_numpy(np.random.default_rng(b + c + k).normal(size=(b, c))).float()
    assert bss_penalty(feature, k).item() == pytest.approx(tllib_bss(feature.double(), k).item(), rel=1e-5)
    assert bss_penalty(feature, k).item() > 0  # min(B, C) <= k is penalised too


def test_bss_method_on_a_batch_of_one(pair, batch) -> None:
    source, target = pair("unet")
    method = METHODS.get("bss")(k=1, eta=0.5)
    method.prepare(RunContext(source, target, [], CPU))
    seen = []
    target.get_submodule(target.encoder_stages[-1]).register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    b = batch(2, batch=1)
    logits = target(b["image"])
    expected = base_loss(logits, b["label"]) + 0.5 * tllib_bss(seen[0].mean(dim=(2, 3)).double(), 1)
    assert method.loss(b, logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_lwf_matches_tllib_knowledge_distillation(pair, batch) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)
    method = METHODS.get("lwf")(**{"lambda": 4.0, "temperature": 3.0})
    method.prepare(RunContext(source, target, [], CPU))
    perturb(method.aux_head, scale=0.3)
    perturb(target.body, scale=0.02)
    b = batch(2)
    logits = target(b["image"])
    with torch.no_grad():
        y_s = method.aux_head(target.body(b["image"]))  # the student: auxiliary (old-task) head
        y_teacher = source(b["image"])
    got = method.loss(b, logits, target) - base_loss(logits, b["label"])
    # pixels are the samples: (B, C, H, W) -> (B*H*W, C); KnowledgeDistillationLoss(T) with KLDivLoss(batchmean)
    rows = lambda z: z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()  # noqa: E731
    kd = torch.nn.KLDivLoss(reduction="batchmean")(
        F.log_softmax(rows(y_s) / 3.0, -1), F.softmax(rows(y_teacher) / 3.0, -1)
    )
    assert got.item() == pytest.approx(4.0 * kd.item(), rel=1e-5)


def test_lwf_warmup_trains_the_head_only(pair, loop) -> None:
    source, target = pair("unet", source_classes=3, target_classes=2)
    method = METHODS.get("lwf")(warmup_fraction=0.5)
    states = [{k: v.clone() for k, v in target.state_dict().items()}]
    aux = [method]
    loop(
        method,
        source,
        target,
        steps=4,
        lr=0.05,
        after_step=lambda s: states.append({k: v.clone() for k, v in target.state_dict().items()}),
    )
    assert method.warmup_steps == 2 and aux
    body = [k for k in states[0] if k.startswith("body.")]
    for step in range(4):
        changed = [k for k in body if not torch.equal(states[step][k], states[step + 1][k])]
        assert (len(changed) > 0) == (step >= 2), f"step {step}"
        assert not torch.equal(states[step]["head.weight"], states[step + 1]["head.weight"])


def test_lpft_probe_matches_sklearn_logistic_regression(pair, train_set) -> None:
    source, target = pair("unet", source_classes=2, target_classes=3)
    data = train_set(3, slices=2, size=32)
    l2 = 1e-2
    METHODS.get("lp-ft")(probe_l2=l2).prepare(RunContext(source, target, data, CPU))
    target.eval()
    with torch.no_grad():
        x = target.body(torch.from_numpy(data.slices.images)).permute(0, 2, 3, 1).reshape(-1, 16).double().numpy()
    y = data.slices.labels.reshape(-1)
    # log_reg_sk.py: normalize_features (one global mean/std), LogisticRegression(C).fit, inv_normalize_weights
    mean, std = np.mean(x), np.std(x)
    clf = LogisticRegression(C=1.0 / (l2 * len(y)), max_iter=5000, tol=1e-10).fit((x - mean) / std, y)
    weight = clf.coef_ / std
    intercept = clf.intercept_ - clf.coef_ @ (mean / std * np.ones(clf.coef_.shape[1]))
    logits_ref = x @ weight.T + intercept
    logits_ours = x @ target.head.weight.detach().reshape(3, 16).double().numpy().T + target.head.bias.detach().numpy()
    # softmax is shift-invariant per pixel: compare the probabilities, then the centred weights
    p_ref, p_ours = (np.exp(z - z.max(1, keepdims=True)) for z in (logits_ref, logits_ours))
    p_ref, p_ours = p_ref / p_ref.sum(1, keepdims=True), p_ours / p_ours.sum(1, keepdims=True)
    assert np.abs(p_ref - p_ours).max() < 1e-3
    ours_w = target.head.weight.detach().reshape(3, 16).double().numpy()
    np.testing.assert_allclose(ours_w - ours_w.mean(0), weight - weight.mean(0), atol=1e-2 * np.abs(weight).max())


@pytest.mark.parametrize("scope", ["encoder", "encoder+decoder"])
def test_freeze_keeps_source_weights_and_statistics(pair, loop, scope: str) -> None:
    source, target = pair("smp-resnet18", source_classes=2, target_classes=2)
    loop(METHODS.get("freeze")(scope=scope), source, target, steps=2, lr=0.05)
    prefixes = tuple(f"{n}." for n in target.encoder) if scope == "encoder" else ("body.",)
    src = source.state_dict()
    frozen = [k for k in src if k.startswith(prefixes)]
    assert frozen and all(torch.equal(src[k], target.state_dict()[k]) for k in frozen)  # incl. BN running stats
    assert not torch.equal(src["head.weight"], target.state_dict()["head.weight"])
