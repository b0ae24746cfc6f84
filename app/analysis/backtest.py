"""Backtest the churn score on a history of events with known outcomes.

How a data team decides whether to trust the score: fold a file of events
(our JSON contract, one per line, in arrival order) through the same domain
code the worker runs, stop at each cutoff the way the worker's stream clock
would (the newest ``occurred_at`` seen), score every known customer as of the
cutoff, and compare with what happened next (the truth file).

Three questions, each with AUC, Brier score against predicting the base rate,
precision and lift in the top 10%, and a calibration table:

The base at a cutoff is every customer with an event in the 180 days before it.

- ``gone_by_horizon`` (what ``churn_risk`` claims): among the base, who is no
  longer a customer ``horizon`` later (including those already gone silently,
  whom nothing has told us about yet).
- ``future_only``: among the base still customers at the cutoff, who leaves
  within the horizon (the harder forecast).
- ``already_gone``: among the base, who has already left.

Baselines: recency alone (days since the last purchase) and MBG/NBD P(alive)
alone. MBG/NBD parameters are fitted at each cutoff on the data up to it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

from app.analysis.fit import fit_mbgnbd
from app.domain import churn
from app.domain.customer import CustomerState, Policy, churn_inputs, fold
from app.domain.events import decode_event
from app.errors import InvalidEventError

QUESTIONS = ("gone_by_horizon", "future_only", "already_gone")
ACTIVE_DAYS = 180.0


@dataclass
class Snapshot:
    """Every known customer's churn inputs at one cutoff."""

    cutoff: datetime
    inputs: dict[str, churn.ChurnInputs]
    last_event: dict[str, datetime]


@dataclass
class ReplayStats:
    lines: int = 0
    invalid: int = 0
    duplicates: int = 0
    invalid_reasons: dict[str, int] = field(default_factory=dict)


def replay(lines: Iterable[bytes], cutoffs: Sequence[datetime], policy: Policy,
           stats: ReplayStats | None = None) -> list[Snapshot]:  # fmt: skip
    """Fold events in arrival order; snapshot when the stream clock is about to pass a cutoff."""
    stats = stats if stats is not None else ReplayStats()
    pending = sorted(cutoffs)
    states: dict[str, CustomerState] = {}
    clock: datetime | None = None
    out: list[Snapshot] = []
    for raw in lines:
        raw = raw.rstrip(b"\r\n")
        if not raw:
            continue
        stats.lines += 1
        try:
            event = decode_event(raw)
        except InvalidEventError as exc:
            stats.invalid += 1
            stats.invalid_reasons[exc.reason] = stats.invalid_reasons.get(exc.reason, 0) + 1
            continue
        while pending and event.occurred_at > pending[0] and (clock is None or clock <= pending[0]):
            out.append(_snapshot(states, pending.pop(0)))
        clock = event.occurred_at if clock is None else max(clock, event.occurred_at)
        state = states.get(event.customer_id)
        if state is None:
            state = states[event.customer_id] = CustomerState(
                customer_id=event.customer_id, currency=policy.base_currency)
        try:
            outcome = fold(state, event, policy)
        except InvalidEventError as exc:
            stats.invalid += 1
            stats.invalid_reasons[exc.reason] = stats.invalid_reasons.get(exc.reason, 0) + 1
            continue
        stats.duplicates += outcome.value == "duplicate"
    out.extend(_snapshot(states, c) for c in pending if clock is not None and clock >= c)
    return out


def _snapshot(states: Mapping[str, CustomerState], cutoff: datetime) -> Snapshot:
    inputs = {cid: churn_inputs(s, keep=True) for cid, s in states.items()}
    last = {cid: s.last_event_at for cid, s in states.items() if s.last_event_at is not None}
    return Snapshot(cutoff, inputs, last)


def read_truth(path: Path) -> dict[str, datetime | None]:
    """``customer_id`` -> ``churned_at`` (None: still a customer); other fields are ignored."""
    out: dict[str, datetime | None] = {}
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if "customer_id" not in row:
                raise ValueError(f"{path}:{n}: a truth row needs customer_id")
            at = row.get("churned_at")
            out[row["customer_id"]] = datetime.fromisoformat(at) if at else None
    return out


@dataclass
class Scored:
    """Per-customer scores at one cutoff, with the three labels."""

    cutoff: datetime
    customers: list[str]
    risk: np.ndarray
    p_alive: np.ndarray  # MBG/NBD alone (the baseline)
    alive: np.ndarray  # the model's calibrated P(alive), which decides lapse
    recency_days: np.ndarray
    features: list[dict[str, float]]
    labels: dict[str, np.ndarray]
    masks: dict[str, np.ndarray]
    rhythm: churn.Rhythm


def score(snap: Snapshot, truth: Mapping[str, datetime | None], model: churn.ChurnModel,
          horizon: timedelta, fit_rhythm: bool = True, active_days: float = ACTIVE_DAYS,
          ) -> Scored:  # fmt: skip
    """Score every customer of the base at the cutoff and label it from the truth.

    The base is every customer with an event in the ``active_days`` before the
    cutoff: a customer silent for half a year is no longer a forecast.
    """
    cutoff = snap.cutoff
    since = cutoff - timedelta(days=active_days)
    rfm = [s for s in (churn.summary(i.purchases, cutoff) for i in snap.inputs.values()) if s]
    rhythm = (fit_mbgnbd(rfm, model.rhythm) if fit_rhythm else None) or model.rhythm
    fitted = model.with_rhythm(rhythm)
    ids = sorted(c for c in snap.inputs if snap.last_event[c] > since)
    risk, alive, mbg, recency, feats = [], [], [], [], []
    gone_h, gone_now = [], []
    for cid in ids:
        inp = snap.inputs[cid]
        a = churn.assess(inp, cutoff, fitted)
        risk.append(a.risk)
        alive.append(a.p_alive)
        rfm_one = churn.summary(inp.purchases, cutoff)
        mbg.append(rhythm.p_alive(*rfm_one) if rfm_one else 1.0)
        feats.append(churn.features(inp, cutoff, rhythm))
        buys = [t for t, amount in inp.purchases if amount > 0 and t <= cutoff]
        last = buys[-1] if buys else snap.last_event[cid]
        recency.append((cutoff - last).total_seconds() / 86400)
        churned_at = truth.get(cid)
        gone_h.append(churned_at is not None and churned_at <= cutoff + horizon)
        gone_now.append(churned_at is not None and churned_at <= cutoff)
    gh, gn = np.asarray(gone_h), np.asarray(gone_now)
    everyone = np.ones(len(ids), dtype=bool)
    return Scored(
        cutoff, ids, np.asarray(risk), np.asarray(mbg), np.asarray(alive), np.asarray(recency),
        feats,
        labels={"gone_by_horizon": gh, "future_only": gh, "already_gone": gn},
        masks={"gone_by_horizon": everyone, "future_only": ~gn, "already_gone": everyone},
        rhythm=rhythm,
    )  # fmt: skip


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve: P(a random churner outranks a random stayer), ties half."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return None
    u = mannwhitneyu(pos, neg, alternative="two-sided").statistic
    return float(u) / (len(pos) * len(neg))


def calibration(pred: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Customers in equal-count bins of predicted risk: mean predicted against observed."""
    order = np.argsort(pred, kind="stable")
    rows = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            rows.append({"n": int(len(chunk)), "predicted": float(pred[chunk].mean()),
                         "observed": float(labels[chunk].mean())})  # fmt: skip
    return rows


def summarize(pred: np.ndarray, labels: np.ndarray, top: float = 0.1) -> dict[str, Any]:
    """AUC, Brier (and the base rate's), precision and lift in the top share, calibration."""
    n = len(labels)
    base = float(labels.mean()) if n else 0.0
    k = max(1, int(math.ceil(top * n)))
    best = np.argsort(-pred, kind="stable")[:k]
    precision = float(labels[best].mean()) if n else 0.0
    return {
        "n": n, "positives": int(labels.sum()), "base_rate": base,
        "auc": auc(pred, labels),
        "brier": float(np.mean((pred - labels) ** 2)) if n else None,
        "brier_base_rate": float(np.mean((base - labels) ** 2)) if n else None,
        "precision_top10": precision, "lift_top10": precision / base if base else None,
        "calibration": calibration(pred, labels),
    }  # fmt: skip


def lapse_table(scored: Sequence[Scored], thresholds: Sequence[float] = (0.3, 0.5, 0.7)
                ) -> list[dict[str, float]]:  # fmt: skip
    """How well "lapsed" (the model's P(alive) below a threshold) finds the already gone."""
    alive = np.concatenate([s.alive for s in scored]) if scored else np.zeros(0)
    gone = (np.concatenate([s.labels["already_gone"] for s in scored]) if scored
            else np.zeros(0, dtype=bool))  # fmt: skip
    rows = []
    for q in thresholds:
        flag = alive < q
        tp = int((flag & gone).sum())
        rows.append({"p_alive_below": q, "flagged": int(flag.sum()),
                     "already_gone": int(gone.sum()), "precision": tp / max(int(flag.sum()), 1),
                     "recall": tp / max(int(gone.sum()), 1)})  # fmt: skip
    return rows


def evaluate(scored: Sequence[Scored]) -> dict[str, Any]:
    """Every question, pooled over the cutoffs, for the model and the two baselines."""
    out: dict[str, Any] = {}
    for q in QUESTIONS:
        parts = [(s.risk[s.masks[q]], 1 - s.p_alive[s.masks[q]], s.recency_days[s.masks[q]],
                  s.labels[q][s.masks[q]]) for s in scored]  # fmt: skip
        model = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0)
        p_dead = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0)
        recency = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0)
        labels = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, dtype=bool)
        out[q] = {
            "model": summarize(model, labels),
            "p_alive": {"auc": auc(p_dead, labels)},
            "recency": {"auc": auc(recency, labels)},
        }
    out["already_gone"]["model_p_alive"] = {
        "auc": auc(1 - np.concatenate([s.alive[s.masks["already_gone"]] for s in scored]),
                   np.concatenate([s.labels["already_gone"] for s in scored]))
        if scored else None}  # fmt: skip
    out["lapse"] = lapse_table(scored)
    return out


def read_lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        yield from fh


def report_text(result: Mapping[str, Any]) -> str:
    """The backtest as a terminal report."""
    lines = [f"cutoffs: {', '.join(result['cutoffs'])}; horizon {result['horizon_days']} days; "
             f"{result['customers']} customer-cutoffs scored"]  # fmt: skip
    lines.append(f"{'question':18} {'n':>7} {'base':>6} {'AUC':>6} {'recency':>8} {'P(alive)':>8}"
                 f" {'Brier':>7} {'base Br':>7} {'prec@10%':>8} {'lift':>5}")  # fmt: skip
    for q in QUESTIONS:
        r = result["questions"][q]
        m = r["model"]
        lines.append(
            f"{q:18} {m['n']:>7} {m['base_rate']:>6.3f} {_f(m['auc']):>6} "
            f"{_f(r['recency']['auc']):>8} {_f(r['p_alive']['auc']):>8} {_f(m['brier']):>7} "
            f"{_f(m['brier_base_rate']):>7} {m['precision_top10']:>8.3f} {_f(m['lift_top10']):>5}"
        )
    lines.append("(ranked by churn_risk; already_gone ranked by the model's P(alive): AUC "
                 f"{_f(result['questions']['already_gone']['model_p_alive']['auc'])})")
    lines.append("")
    lines.append("lapse (the model's P(alive) below a threshold) against the already gone:")
    for row in result["questions"]["lapse"]:
        lines.append(f"  P(alive) < {row['p_alive_below']}: {row['flagged']} flagged, "
                     f"precision {row['precision']:.3f}, recall {row['recall']:.3f}")
    lines.append("")
    lines.append("calibration (gone_by_horizon, deciles of predicted risk):")
    lines.append(f"{'n':>7} {'predicted':>10} {'observed':>9}")
    for row in result["questions"]["gone_by_horizon"]["model"]["calibration"]:
        lines.append(f"{row['n']:>7} {row['predicted']:>10.3f} {row['observed']:>9.3f}")
    return "\n".join(lines)


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"
