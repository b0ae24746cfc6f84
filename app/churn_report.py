"""``feedback churn report``: churn rate and churn loss per period, as a terminal table.

    feedback churn report [--period month|quarter|year] [--segment tier:A]
                          [--url http://127.0.0.1:6066] [--json]

Reads ``GET /churn`` from a running worker (any worker: the report covers all
partitions, the other workers' as of their last summary).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from app.settings import load_settings


def fetch(url: str, period: str, segment: str | None, token: str | None = None
          ) -> dict[str, Any]:  # fmt: skip
    query = {"period": period, **({"segment": segment} if segment else {})}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"{url}/churn?{urllib.parse.urlencode(query)}",
                                     headers=headers)  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Churn per {report['period']} (as of {report['as_of']}); lost = "
                        f"{report['lost_means']}; loss at margin {report['margin']}")  # fmt: skip
    for col in ("period", "group", "start", "new", "lost", "won back", "end",
                "rate (lost/end)", "rate (lost/start)", "change", "revenue lost", "churn loss",
                "safety line"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("period", "group") else "right")
    for r in report["rows"]:
        change = "-" if r["change"] is None else f"{100 * r['change']:+.2f} pt"
        line = _pct(r["safety_line"]) + (" ABOVE" if r["above_safety_line"] else "")
        table.add_row(r["period"], r["group"], str(r["customers_at_start"]), str(r["new"]),
                      str(r["lost"]), str(r["won_back"]), str(r["customers_at_end"]),
                      _pct(r["churn_rate"]), _pct(r["churn_rate_start"]), change,
                      f"{float(r['revenue_lost']):,.2f}", f"{float(r['churn_loss']):,.2f}",
                      line if r["safety_line"] is not None else "-")  # fmt: skip
    console.print(table)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback churn", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("action", choices=["report"])
    p.add_argument("--period", choices=["month", "quarter", "year"], default="month")
    p.add_argument("--segment", default=None, help="one group, e.g. tier:A or region:eu")
    p.add_argument("--url", default=None, help="a worker's HTTP address")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    s = load_settings()
    if args.url is None:
        args.url = f"http://{s.web_host}:{s.web_port}"
    token = s.http_token.get_secret_value() if s.http_token else None
    try:
        report = fetch(args.url.rstrip("/"), args.period, args.segment, token)
    except (urllib.error.URLError, OSError) as exc:
        print(f"feedback churn: cannot read {args.url}/churn: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console(width=200))
    return 0
