"""Fitting the churn model: MBG/NBD population parameters and the logistic fusion weights.

scipy does the optimisation (L-BFGS-B) and the log-gamma function; the
likelihoods are the published closed forms, a few lines each, so they are
written here rather than pulling in an unmaintained CLV package (``lifetimes``
was archived in 2020) or a probabilistic-programming stack.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import gammaln

from app.domain.churn import FEATURES, ChurnModel, Logistic, Rhythm

MIN_CUSTOMERS = 50


def fit_mbgnbd(
    rfm: Sequence[tuple[int, float, float]], start: Rhythm | None = None, max_rows: int = 20_000
) -> Rhythm | None:
    """Maximum-likelihood MBG/NBD parameters from (x, t_x, T) per customer (days).

    Log-likelihood per customer (Batislam, Denizel and Filiztekin 2007):
    ``lnG(r+x) - lnG(r) + r ln(alpha) + lnG(a+b) + lnG(b+x+1) - lnG(b) - lnG(a+b+x+1)
    - (r+x) ln(alpha+T) + ln(1 + a/(b+x) ((alpha+T)/(alpha+t_x))^(r+x))``.
    Returns None with fewer than MIN_CUSTOMERS rows or when the optimiser fails,
    so the caller keeps its previous parameters.
    """
    rows = [row for row in rfm if row[2] > 0]
    if len(rows) < MIN_CUSTOMERS:
        return None
    if len(rows) > max_rows:  # an even sample keeps a refit cheap at a million customers
        step = len(rows) / max_rows
        rows = [rows[int(i * step)] for i in range(max_rows)]
    data = np.asarray(rows, dtype=float)
    x, t_x, age = data[:, 0], data[:, 1], data[:, 2]
    guess = start or Rhythm()

    def nll(log_params: np.ndarray) -> float:
        r, alpha, a, b = np.exp(log_params)
        a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a2 = gammaln(a + b) + gammaln(b + x + 1) - gammaln(b) - gammaln(a + b + x + 1)
        a3 = -(r + x) * np.log(alpha + age)
        a4 = np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + age) - np.log(alpha + t_x))
        ll = a1 + a2 + a3 + np.logaddexp(a4, 0.0)
        return float(-ll.mean())

    x0 = np.log([guess.r, guess.alpha, guess.a, guess.b])
    result = minimize(nll, x0, method="L-BFGS-B", bounds=[(-6, 6), (-6, 9), (-6, 6), (-6, 9)])
    if not result.success and not np.isfinite(result.fun):
        return None
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return Rhythm(r=r, alpha=alpha, a=a, b=b)


def fit_logistic(
    rows: Sequence[Mapping[str, float]], labels: Sequence[bool], l2: float = 1e-3
) -> tuple[float, dict[str, float]]:
    """Intercept and weights minimising mean log-loss + l2 * |w|^2 over FEATURES."""
    names = list(FEATURES)
    X = np.asarray([[row[n] for n in names] for row in rows], dtype=float)
    y = np.asarray(labels, dtype=float)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = theta[0] + X @ theta[1:]
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        eps = 1e-12
        value = -np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))
        value += l2 * float(theta[1:] @ theta[1:])
        grad = np.empty_like(theta)
        diff = (p - y) / len(y)
        grad[0] = diff.sum()
        grad[1:] = X.T @ diff + 2 * l2 * theta[1:]
        return float(value), grad

    base = min(max(float(y.mean()), 1e-4), 1 - 1e-4)
    theta0 = np.zeros(len(names) + 1)
    theta0[0] = math.log(base / (1 - base))
    result = minimize(loss, theta0, jac=True, method="L-BFGS-B")
    theta = result.x
    return float(theta[0]), {n: round(float(w), 4) for n, w in zip(names, theta[1:], strict=True)}


def fitted_model(
    rows: Sequence[Mapping[str, float]], churned: Sequence[bool], gone: Sequence[bool],
    horizon_days: int, rhythm: Rhythm, trained_on: str,
) -> ChurnModel:  # fmt: skip
    """Both fusions: gone within the horizon (``churned``) and already gone (``gone``)."""
    churn_fit = fit_logistic(rows, churned)
    gone_fit = fit_logistic(rows, gone)
    return ChurnModel(
        churn=Logistic(round(churn_fit[0], 4), churn_fit[1]),
        gone=Logistic(round(gone_fit[0], 4), gone_fit[1]),
        horizon_days=horizon_days, rhythm=rhythm, trained_on=trained_on,
    )  # fmt: skip
