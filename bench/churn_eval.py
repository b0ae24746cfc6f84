"""Does churn_risk tell the truth? The backtest over simulated histories, tuned and reported apart.

    python -m bench.churn_eval [--customers N] [--train 1,2,3] [--test 4,5,6,7,8]
                               [--write-model]

For each seed the simulator runs to the last cutoff plus the horizon; the
events are folded through the worker's domain code and every customer of the
base is scored at each cutoff. The logistic weights are fitted on the train
seeds only; the figures reported are from the test seeds, next to recency
alone, MBG/NBD P(alive) alone and the simulator's own oracle (the hazard it
used). ``--write-model`` stores the fitted weights as the shipped default
(app/domain/churn_model.json). Results: bench/results/churn-eval-<time>.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.analysis import experiment
from app.domain.churn import MODEL_FILE, load_model
from bench import report


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores {cpu}, {mem:.1f} GiB, Python {platform.python_version()}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--train", default="1,2,3")
    p.add_argument("--test", default="4,5,6,7,8")
    p.add_argument("--cutoffs", default="270,360,450", help="days after the simulation start")
    p.add_argument("--horizon", type=int, default=90)
    p.add_argument("--write-model", action="store_true")
    args = p.parse_args()
    cut = [int(d) for d in args.cutoffs.split(",")]
    began = time.monotonic()
    train = [experiment.simulate(int(s), args.customers, cut, args.horizon)
             for s in args.train.split(",")]  # fmt: skip
    model = experiment.fit(train, load_model(), args.horizon)
    fitted_at = time.monotonic()
    test = [experiment.simulate(int(s), args.customers, cut, args.horizon)
            for s in args.test.split(",")]  # fmt: skip
    result: dict[str, Any] = {
        "machine": machine(), "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers_per_seed": args.customers, "train_seeds": args.train,
        "test_seeds": args.test, "cutoff_days": cut, "horizon_days": args.horizon,
        "model": model.to_dict(),
        "questions": experiment.evaluate(test, model, args.horizon),
        "seconds": {"fit": round(fitted_at - began, 1), "total": 0.0},
    }  # fmt: skip
    result["seconds"]["total"] = round(time.monotonic() - began, 1)
    if args.write_model:
        MODEL_FILE.write_text(json.dumps(model.to_dict(), indent=2) + "\n")
    md = render(result)
    report.save("churn-eval", report.stamp(), result, md)
    print(md)


def render(r: dict[str, Any]) -> str:
    out = [f"# churn backtest {r['when']}", "", f"machine: {r['machine']}", "",
           f"{r['customers_per_seed']} customers per seed; fitted on seeds {r['train_seeds']}, "
           f"reported on seeds {r['test_seeds']}; cutoffs at days {r['cutoff_days']}; "
           f"horizon {r['horizon_days']} days; base = an event in the 180 days before the cutoff.",
           "", "| question | n | base rate | AUC | recency AUC | P(alive) AUC | oracle AUC "
           "| Brier | Brier of base rate | precision top 10% | lift top 10% |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for q in ("gone_by_horizon", "future_only", "already_gone"):
        v = r["questions"][q]
        m = v["model"]
        oracle = v.get("oracle", {}).get("auc")
        out.append(
            f"| {q} | {m['n']} | {m['base_rate']:.3f} | {m['auc']:.3f} | "
            f"{v['recency']['auc']:.3f} | {v['p_alive']['auc']:.3f} | "
            f"{'-' if oracle is None else f'{oracle:.3f}'} | {m['brier']:.4f} | "
            f"{m['brier_base_rate']:.4f} | {m['precision_top10']:.3f} | {m['lift_top10']:.2f} |"
        )
    out += ["", "already_gone ranked by the model's P(alive) instead of churn_risk: AUC "
            f"{r['questions']['already_gone']['model_p_alive']['auc']:.3f}", "",
            "Lapse (the model's P(alive) below a threshold) against the already gone:", "",
            "| P(alive) below | flagged | precision | recall |", "|---|---|---|---|"]
    for row in r["questions"]["lapse"]:
        out.append(f"| {row['p_alive_below']} | {row['flagged']} | {row['precision']:.3f} | "
                   f"{row['recall']:.3f} |")
    out += ["", "Calibration (gone_by_horizon, deciles of predicted risk):", "",
            "| n | predicted | observed |", "|---|---|---|"]  # fmt: skip
    for row in r["questions"]["gone_by_horizon"]["model"]["calibration"]:
        out.append(f"| {row['n']} | {row['predicted']:.3f} | {row['observed']:.3f} |")
    out += ["", f"time: {r['seconds']['total']} s", ""]
    return "\n".join(out)


if __name__ == "__main__":
    main()
