"""LP-FT: linear probing to convergence, then full fine-tuning from the probed head (Kumar et al., ICLR 2022)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import HParam, Method, RunContext, Space, register_method
from methods.features import require

PROBE_MAX_ITER = 200  # L-BFGS iterations: sklearn LogisticRegression(max_iter=200) in the reference's log_reg_sk.py
PROBE_MAX_PIXELS = 1 << 18  # pixels the probe fits on (a seeded subsample above this)


@torch.no_grad()
def body_features(model: nn.Module, images: torch.Tensor, device: torch.device, batch: int = 32) -> torch.Tensor:
    """(N*H*W, C) body outputs of the frozen body in eval mode, one row per pixel."""
    was_training = model.training
    model.eval()
    out = [model.body(images[i : i + batch].to(device)).float() for i in range(0, len(images), batch)]
    model.train(was_training)
    feats = torch.cat(out)
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])


def fit_probe(
    features: torch.Tensor, labels: torch.Tensor, classes: int, l2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by L-BFGS: argmin mean CE(W x + b, y) + l2/2 ||W||^2 -> (W, b).

    Features are standardised by one global mean and std (as the reference does) and the weights folded back.
    """
    # Kumar et al. 2022, sec. 3 (LP = logistic regression on frozen features); reference: AnanyaKumar/transfer_learning
    # unlabeled_extrapolation/log_reg_sk.py (sklearn LogisticRegression, L-BFGS, normalize_features/inv_normalize).
    mean, std = features.mean(), features.std(correction=0).clamp_min(1e-12)
    x = (features - mean) / std
    weight = torch.zeros(classes, x.shape[1], device=x.device, requires_grad=True)
    bias = torch.zeros(classes, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=PROBE_MAX_ITER, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weight, bias = weight.detach(), bias.detach()
    return weight / std, bias - (weight * mean / std).sum(1)


@register_method("lp-ft")
class LPFT(Method):
    """Fit the head as a logistic regression on the frozen body's features, then fine-tune everything."""

    requires = ("body",)
    version = 2  # 2: the probe's pixel subsample follows the cell's seed (1 drew it with seed 0 for every seed)
    hparams = {
        "probe_l2": HParam(
            1e-4,
            "L2 weight of the linear probe: mean CE + probe_l2/2 ||W||^2 (sklearn's 1/(C n))",
            low=0,
            space=Space("log", 1e-6, 1e-1),
        ),
    }

    def prepare(self, run: RunContext) -> None:
        target_model, train_data, device = run.target_model, run.train_data, run.device
        super().prepare(run)
        slices = getattr(train_data, "slices", None)
        require(slices is not None and len(slices.images) > 0, self.name, "the probe needs training slices")
        images = torch.as_tensor(slices.images)
        labels = torch.as_tensor(slices.labels).long().reshape(-1).to(device)
        feats = body_features(target_model, images, device)
        if len(labels) > PROBE_MAX_PIXELS:
            draw = torch.Generator().manual_seed(run.seed)  # the cell's seed: another seed, another subsample
            pick = torch.randperm(len(labels), generator=draw)[:PROBE_MAX_PIXELS]
            feats, labels = feats[pick.to(device)], labels[pick.to(device)]
        head = target_model.head
        weight, bias = fit_probe(feats, labels, head.out_channels, self.params["probe_l2"])
        with torch.no_grad():
            head.weight.copy_(weight.reshape(head.weight.shape))
            head.bias.copy_(bias)
