"""The README's main command: the demo shows traffic and alerts, then leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.local.kafka import free_port, port_free

pytestmark = pytest.mark.integration


def test_demo_shows_alerts_and_stops_everything(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_")}
    env["FEEDBACK_WEB_PORT"] = str(free_port())
    data = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "app", "demo", "--duration", "45", "--kafka-port",
         str(free_port()), "--data-dir", str(data), "--seed", "3"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    processed = [int(n.replace(",", "")) for n in re.findall(r"processed\s+([\d,]+)", res.stdout)]
    alerts = [int(n.replace(",", "")) for n in re.findall(r"alerts\s+([\d,]+)", res.stdout)]
    assert processed and processed[-1] > 1000, res.stdout[-2000:]
    assert alerts and alerts[-1] > 0, "a newcomer sees alerts within a minute"
    assert "NPS by segment" in res.stdout and "overall" in res.stdout
    assert (data / "ground_truth.jsonl").stat().st_size > 0
    leftovers = subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"
    assert port_free(int(env["FEEDBACK_WEB_PORT"])), "the worker still listens"
