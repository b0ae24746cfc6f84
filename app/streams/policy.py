"""The domain policy a worker folds with, and the two things that move it while it runs.

Settings fix most of ``domain.customer.Policy``; two parts are learnt from the data:
the Pareto revenue boundaries (from every partition's revenues) and the MBG/NBD
purchase rhythm (refitted on this worker's customers now and then). Both are caches
derived from the tables, never state: a restarted worker derives them again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from app.analysis.fit import fit_mbgnbd
from app.domain import value
from app.domain.churn import ChurnModel
from app.domain.customer import Policy
from app.metrics import ServiceMetrics
from app.settings import Settings
from app.streams.pareto import ParetoMirror
from app.streams.readmodel import ReadModel

log = logging.getLogger(__name__)

RHYTHM_SAMPLE = 20_000  # customers the rhythm is refitted on
RHYTHM_MIN = 200  # fewer customers than this: keep the shipped parameters


def policy_from(
    settings: Settings, cutoffs: value.RevenueCutoffs | None = None,
    model: ChurnModel | None = None,
) -> Policy:  # fmt: skip
    """The domain policy the settings describe."""
    return Policy(
        churn_model=model or settings.churn_model(),
        lapse_p_alive=settings.lapse_p_alive,
        rules=settings.alert_rules,
        contact_sla=settings.case_contact_sla,
        rearm_after=settings.detractor_rearm_after,
        base_currency=settings.base_currency,
        fx_rates=dict(settings.fx_rates),
        value_policy=value.ValuePolicy(
            revenue_threshold=settings.high_value_revenue,
            top_share=settings.high_value_top_share,
            tiers=settings.high_value_tiers,
        ),
        cutoffs=cutoffs or value.RevenueCutoffs(),
        dedup_event_ids=settings.dedup_event_ids,
        realert_after=settings.detractor_realert_after,
    )


class LivePolicy:
    """The current Policy: settings, plus the latest Pareto boundaries and fitted rhythm."""

    def __init__(self, settings: Settings, metrics: ServiceMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.model = settings.churn_model()
        self.policy = policy_from(settings, model=self.model)
        self._rhythm_at = 0.0
        self._rhythm_fitting = False

    def recut(self, pareto: ParetoMirror, owned: set[int], remote: Any) -> Policy:
        """New Pareto boundaries into the policy (and the cutoff gauges)."""
        cutoffs = pareto.cutoffs(self.policy.value_policy.top_share, owned, remote)
        if cutoffs == self.policy.cutoffs:
            return self.policy
        self.policy = policy_from(self.settings, cutoffs, self.model)
        for tier, cut in (("A", cutoffs.a), ("B", cutoffs.b)):
            if cut is not None:
                self.metrics.pareto_cutoff.labels(tier).set(cut)
        return self.policy

    async def refit_rhythm(self, readmodel: ReadModel) -> None:
        """Fit the MBG/NBD population parameters on this worker's customers, now and then.

        In a thread (scipy releases the GIL for most of it) on at most 20,000
        customers, every ``churn_refit_interval`` seconds; until the first fit
        the shipped parameters are used.
        """
        due = time.monotonic() - self._rhythm_at >= self.settings.churn_refit_interval
        if not due or self._rhythm_fitting or len(readmodel) < RHYTHM_MIN:
            return
        self._rhythm_fitting = True
        try:
            rfm = readmodel.rfm(RHYTHM_SAMPLE)
            fitted = await asyncio.get_running_loop().run_in_executor(
                None, fit_mbgnbd, rfm, self.model.rhythm
            )
        finally:
            self._rhythm_fitting = False
            self._rhythm_at = time.monotonic()
        if fitted is not None:
            self.model = self.model.with_rhythm(fitted)
            self.policy = policy_from(self.settings, self.policy.cutoffs, self.model)
            log.info("churn: MBG/NBD refitted on %d customers: %s", len(rfm), fitted)
