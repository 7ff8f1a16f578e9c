"""NCE as an estimator; its maths is ``methods.transferability``."""

from __future__ import annotations

from torch import Tensor

from methods import transferability as T
from methods.estimators.base import Estimator, Evidence, register_estimator


@register_estimator("nce")
class NCE(Estimator):
    """Negative Conditional Entropy (Tran, Nguyen & Hassner, ICCV 2019, "Transferability and hardness of
    supervised classification tasks") of the target label given the source model's hard prediction (argmax),
    pixels as samples; its location map is NCE on each window's pooled pixels, on LEEP's scale (a mean log
    P(y|z) over the window's pixels)."""

    needs = ("counts",)
    map_needs = ("window_counts",)

    def score(self, evidence: Evidence) -> float:
        return T.nce_from_counts(evidence.counts)

    def location_map(self, evidence: Evidence) -> Tensor:
        return T.location_nce_map(evidence.window_counts)
