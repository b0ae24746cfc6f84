"""Simulated histories with known outcomes, for fitting and proving the churn score.

Used by ``bench/churn_eval.py`` (several seeds and cutoffs, tune on some seeds,
report on others) and by the small version in the test suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from app.analysis import backtest
from app.analysis.fit import fitted_model
from app.domain.churn import ChurnModel
from app.domain.customer import Policy
from app.settings import DEFAULT_FX_RATES
from app.simulate.model import Simulation

START = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass
class History:
    """One simulated run: records in arrival order, the truth, the oracle at each cutoff."""

    seed: int
    lines: list[bytes]
    truth: dict[str, datetime | None]
    oracle: dict[datetime, dict[str, float]]
    cutoffs: list[datetime]


def simulate(seed: int, customers: int, cutoff_days: Sequence[int], horizon_days: int) -> History:
    """Run the simulator to the last cutoff plus the horizon, noting the oracle at each cutoff."""
    sim = Simulation(customers, seed, START, run_id=f"s{seed}")
    cutoffs = [START + timedelta(days=d) for d in cutoff_days]
    horizon = timedelta(days=horizon_days)
    end = cutoffs[-1] + horizon
    pending = list(cutoffs)
    oracle: dict[datetime, dict[str, float]] = {}
    lines: list[bytes] = []
    for ev in sim.events():
        at = ev.emitted_at or ev.occurred_at
        while pending and at > pending[0]:
            cut = pending.pop(0)
            oracle[cut] = sim.oracle(cut, horizon)
        if at > end:
            break
        lines.append(ev.value)
    truth = {r["customer_id"]: _at(r["churned_at"]) for r in sim.ground_truth(end)}
    return History(seed, lines, truth, oracle, cutoffs)


def policy() -> Policy:
    return Policy(fx_rates=dict(DEFAULT_FX_RATES))


def scored(history: History, model: ChurnModel, horizon_days: int) -> list[backtest.Scored]:
    snaps = backtest.replay(history.lines, history.cutoffs, policy())
    return [backtest.score(s, history.truth, model, timedelta(days=horizon_days)) for s in snaps]


def fit(histories: Sequence[History], start: ChurnModel, horizon_days: int) -> ChurnModel:
    """Logistic weights fitted on the histories' gone-by-horizon labels, pooled over cutoffs."""
    rows: list[dict[str, float]] = []
    labels: list[bool] = []
    gone: list[bool] = []
    rhythm = start.rhythm
    for h in histories:
        for s in scored(h, start, horizon_days):
            rows += s.features
            labels += list(s.labels["gone_by_horizon"])
            gone += list(s.labels["already_gone"])
            rhythm = s.rhythm
    seeds = ",".join(str(h.seed) for h in histories)
    return fitted_model(rows, labels, gone, horizon_days, rhythm,
                        f"simulator seeds {seeds}, {len(rows)} customer-cutoffs, "
                        f"label: gone within {horizon_days} days")  # fmt: skip


def evaluate(histories: Sequence[History], model: ChurnModel, horizon_days: int
             ) -> dict[str, Any]:  # fmt: skip
    """Backtest figures pooled over histories and cutoffs, with the oracle's AUC."""
    all_scored: list[backtest.Scored] = []
    oracle_scores: list[float] = []
    oracle_labels: list[bool] = []
    for h in histories:
        for s in scored(h, model, horizon_days):
            all_scored.append(s)
            o = h.oracle.get(s.cutoff, {})
            oracle_scores += [o.get(c, 0.0) for c in s.customers]
            oracle_labels += list(s.labels["gone_by_horizon"])
    result = backtest.evaluate(all_scored)
    result["gone_by_horizon"]["oracle"] = {
        "auc": backtest.auc(np.asarray(oracle_scores), np.asarray(oracle_labels))}
    return result


def _at(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
