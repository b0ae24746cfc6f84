"""``feedback simulate``: publish realistic traffic to the configured input topics."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections import Counter
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from app.settings import load_settings
from app.simulate.model import ChurnMix
from app.simulate.publish import SimOptions, publish, write_file


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="feedback simulate", description=__doc__)
    p.add_argument("--rate", type=float, default=500.0, help="events/s; 0 = as fast as possible")
    p.add_argument("--events", type=int, default=None, help="stop after N events")
    p.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    p.add_argument("--customers", type=int, default=2000)
    p.add_argument("--speed-days", type=float, default=1.0,
                   help="simulated days per real second (0 = no time pacing)")  # fmt: skip
    p.add_argument("--days-back", type=float, default=None,
                   help="simulated time starts this many days before now (default 365; with "
                        "--out --days: --days, so the history ends now)")  # fmt: skip
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--truth", default="ground_truth.jsonl",
                   help="where to write who churned when and why (JSON lines)")  # fmt: skip
    p.add_argument("--out", default=None,
                   help="write the records to this file (JSON lines, arrival order) instead of "
                        "publishing; no broker needed")  # fmt: skip
    p.add_argument("--days", type=float, default=None,
                   help="with --out: stop after this many simulated days")  # fmt: skip
    p.add_argument("--mix", action="append", default=[], metavar="NAME=VALUE",
                   help="change a churn-mix figure, e.g. --mix complain_share=0.2 "
                        f"(names: {', '.join(f.name for f in fields(ChurnMix))})")  # fmt: skip
    args = p.parse_args(argv)
    mix = ChurnMix()
    for item in args.mix:
        name, _, text = item.partition("=")
        known = {f.name: f for f in fields(ChurnMix)}
        if name not in known or not text:
            p.error(f"--mix {item!r}: give NAME=VALUE with NAME one of {', '.join(known)}")
        try:
            value: Any = (tuple(float(x) for x in text.split(",")) if "," in text
                             else float(text))  # fmt: skip
        except ValueError:
            p.error(f"--mix {item!r}: {text!r} is not a number (or two, comma-separated)")
        mix = replace(mix, **{name: value})
    if args.out is not None:
        if args.events is None and args.days is None:
            p.error("with --out give --events N or --days N")
        back = args.days_back if args.days_back is not None else (args.days or 365.0)
        opts = SimOptions(customers=args.customers, seed=args.seed, events=args.events,
                          days_back=back, truth=Path(args.truth), mix=mix,
                          run_id=f"sim{args.seed}")  # fmt: skip
        counts = write_file(opts, Path(args.out), args.days)
        for key, n in sorted(counts.items()):
            print(f"{key}\t{n}")
        print(f"events\t{args.out}\nground truth\t{args.truth}")
        return 0
    if args.events is None and args.duration is None:
        p.error("give --events N or --duration SECONDS")
    settings = load_settings()
    opts = SimOptions(customers=args.customers, seed=args.seed, rate=args.rate,
                      events=args.events, duration=args.duration, speed=args.speed_days * 86400,
                      days_back=365.0 if args.days_back is None else args.days_back,
                      truth=Path(args.truth), run_id=f"sim{args.seed}", mix=mix)  # fmt: skip

    def progress(sent: int, counts: Counter[str]) -> None:
        print(f"\rsent {sent:,} events (simulated day {counts.get('sim_days', 0)})",
              end="", file=sys.stderr, flush=True)  # fmt: skip

    counts = asyncio.run(publish(settings, opts, progress=progress))
    print(file=sys.stderr)
    for key, n in sorted(counts.items()):
        print(f"{key}\t{n}")
    print(f"ground truth\t{args.truth}")
    return 0
