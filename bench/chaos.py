"""The long chaos soak: 20 SIGKILLs and a 60 s broker outage, figures to bench/results/.

It runs the suite's soak (tests/integration/test_chaos_soak.py) with a longer plan
rather than a copy of it, so the bench and the test check the same things: every
customer's state, the alerts and /nps equal a sequential replay, and every malformed
record is dead-lettered. The test prints its figures as one JSON line.

    python -m bench.chaos [--kills 20] [--outage 60]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.throughput import machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--outage", type=float, default=60.0, help="broker outage, seconds")
    args = parser.parse_args()
    env = {**os.environ, "SOAK_STEPS": str(args.kills - 1), "SOAK_EARLY_KILL": "1",
           "SOAK_OUTAGE_SECONDS": str(args.outage)}  # fmt: skip
    began = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
         "tests/integration/test_chaos_soak.py"],
        env=env, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    wall = round(time.monotonic() - began, 1)
    figures = next((json.loads(line.split("soak: ", 1)[1]) for line in proc.stdout.splitlines()
                    if line.startswith("soak: ")), None)  # fmt: skip
    passed = proc.returncode == 0 and figures is not None
    result = {"machine": machine(), "kills_planned": args.kills, "outage_seconds": args.outage,
              "passed": passed, "wall_seconds": wall, "figures": figures}  # fmt: skip
    if not passed:
        result["output_tail"] = (proc.stdout + proc.stderr)[-4000:]
    stamp = report.stamp()
    m = result["machine"]
    md = (f"# Chaos soak, {stamp}\n\nMachine: {m['cpus']} cores {m['cpu_model']}, "
          f"{m['memory_gib']} GiB, Python {m['python']}, Kafka {m['kafka']}.\n\n"
          f"Command: `python -m bench.chaos --kills {args.kills} --outage {args.outage:g}`\n\n"
          f"Result: **{'passed' if passed else 'FAILED'}** in {wall} s.\n\n")  # fmt: skip
    if figures:
        md += "| figure | value |\n|---|---|\n" + "".join(
            f"| {k} | {v} |\n" for k, v in figures.items()
        )
    if not passed:
        md += "\n```\n" + result["output_tail"] + "\n```\n"
    report.save("chaos", stamp, result, md)
    print(md)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
