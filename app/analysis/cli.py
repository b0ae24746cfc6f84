"""``feedback backtest``: how well does churn_risk rank and calibrate on your own history?

    feedback backtest --events EVENTS.jsonl --truth TRUTH.jsonl
                      [--as-of 2026-03-01T00:00:00Z ...] [--horizon 90d]
                      [--model MODEL.json] [--fit OUT.json] [--json]

EVENTS: our JSON event contract, one per line, in arrival order (what the
input topics carried; ``feedback simulate --out`` writes one). Lines that do
not decode are counted and skipped, as the worker would dead-letter them.
TRUTH: one JSON object per line, ``{"customer_id": "...", "churned_at":
"RFC 3339" | null, "cause": "..." (optional)}``; customers missing from it
are taken as not churned.

Without ``--as-of`` the cutoffs are the last event minus 1, 2 and 3 horizons
(those leaving at least 90 days of history). A cutoff whose horizon reaches
past the last event is refused: its outcomes are not known yet.

``--fit OUT.json`` fits the logistic weights on all cutoffs but the last and
reports on the last one only (a time split, so the figures are out of
sample), then writes the model; point ``FEEDBACK_CHURN_MODEL_FILE`` at it to
use it in the worker.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from app.analysis import backtest
from app.analysis.fit import fitted_model
from app.domain.churn import load_model
from app.domain.customer import Policy
from app.settings import DEFAULT_FX_RATES


def horizon_arg(text: str) -> timedelta:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*d?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: give days, e.g. 90d")
    return timedelta(days=float(m.group(1)))


def as_of_arg(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 time") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset, e.g. Z")
    return at


def span(path: Path) -> tuple[datetime, datetime]:
    """First and last ``occurred_at`` in the file (undecodable lines skipped)."""
    first = last = None
    for raw in backtest.read_lines(path):
        try:
            at = datetime.fromisoformat(json.loads(raw)["occurred_at"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            continue
        if at.tzinfo is None:
            continue
        first = at if first is None or at < first else first
        last = at if last is None or at > last else last
    if first is None or last is None:
        raise SystemExit(f"feedback backtest: no event in {path} has a readable occurred_at")
    return first, last


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback backtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--events", required=True, type=Path)
    p.add_argument("--truth", required=True, type=Path)
    p.add_argument("--as-of", nargs="+", type=as_of_arg, default=None, help="cutoffs")
    p.add_argument("--horizon", type=horizon_arg, default=timedelta(days=90))
    p.add_argument("--model", type=Path, default=None, help="a model file (default: shipped)")
    p.add_argument("--fit", type=Path, default=None, help="fit weights, write the model here")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    for f in (args.events, args.truth):
        if not f.is_file():
            p.error(f"{f}: no such file")
    first, last = span(args.events)
    horizon: timedelta = args.horizon
    cutoffs = sorted(args.as_of) if args.as_of else [
        c for c in (last - horizon * k for k in (3, 2, 1)) if c >= first + timedelta(days=90)]
    if not cutoffs:
        p.error(f"the file covers {first.date()}..{last.date()}: too short for a "
                f"{horizon.days}-day horizon after 90 days of history; give --as-of")  # fmt: skip
    late = [c for c in cutoffs if c + horizon > last]
    if late:
        p.error(f"cutoff {late[0].isoformat()} + horizon is after the last event "
                f"({last.isoformat()}): its outcomes are not known yet")  # fmt: skip
    model = load_model(args.model)
    truth = backtest.read_truth(args.truth)
    stats = backtest.ReplayStats()
    policy = Policy(fx_rates=dict(DEFAULT_FX_RATES), churn_model=model)
    snaps = backtest.replay(backtest.read_lines(args.events), cutoffs, policy, stats)
    scored = [backtest.score(s, truth, model, horizon) for s in snaps]
    fitted_note = None
    if args.fit is not None:
        train, test = (scored[:-1], scored[-1:]) if len(scored) > 1 else (scored, scored)
        rows = [f for s in train for f in s.features]
        labels = [bool(v) for s in train for v in s.labels["gone_by_horizon"]]
        gone = [bool(v) for s in train for v in s.labels["already_gone"]]
        dates = ", ".join(s.cutoff.date().isoformat() for s in train)
        model = fitted_model(rows, labels, gone, horizon.days, train[-1].rhythm,
                             f"{args.events.name}, cutoffs {dates}")  # fmt: skip
        args.fit.write_text(json.dumps(model.to_dict(), indent=2) + "\n")
        scored = [backtest.score(s, truth, model, horizon) for s in snaps[-1:]]
        fitted_note = ("in sample: only one cutoff" if len(snaps) == 1 else
                       f"fitted on {len(train)} earlier cutoffs, reported on the last")  # fmt: skip
    result: dict[str, Any] = {
        "events": str(args.events), "lines": stats.lines, "invalid_lines": stats.invalid,
        "invalid_reasons": stats.invalid_reasons, "duplicates": stats.duplicates,
        "cutoffs": [s.cutoff.isoformat() for s in scored], "horizon_days": horizon.days,
        "customers": sum(len(s.customers) for s in scored),
        "questions": backtest.evaluate(scored), "model": model.trained_on,
        "fitted": fitted_note, "model_file": str(args.fit) if args.fit else None,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{stats.lines} lines, {stats.invalid} skipped as invalid, "
              f"{stats.duplicates} duplicates; model: {model.trained_on or 'shipped default'}")
        if fitted_note:
            print(f"fitted: {fitted_note}; model written to {args.fit}")
        print(backtest.report_text(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
