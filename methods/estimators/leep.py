"""LEEP as an estimator; its maths is ``methods.transferability`` (docs/design.md §TRM)."""

from __future__ import annotations

from torch import Tensor

from methods.estimators.base import Estimator, Evidence, register_estimator


@register_estimator("leep")
class LEEP(Estimator):
    """Log Expected Empirical Prediction (Nguyen et al., ICML 2020), pixels as samples, from the source model's
    softmax; its location map is LEEP on each window's pooled pixels (Tan et al., ICIP 2023)."""

    needs = ("joint", "log_e")
    map_needs = ("window_joint", "window_log_e")

    def score(self, evidence: Evidence) -> float:
        # Nguyen et al. 2020, LEEP, ICML, sec. 3, eq. (2): mean over samples of log e
        return evidence.log_e.item() / evidence.pixels

    def location_map(self, evidence: Evidence) -> Tensor:
        # Tan et al., ICIP 2023: LEEP of each window's samples (as methods.transferability.location_leep_map)
        return evidence.window_log_e / evidence.window_pixels
