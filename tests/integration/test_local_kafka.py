"""`feedback kafka up/status/down` as a user runs them: a real process, no leftovers."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.local import kafka

pytestmark = pytest.mark.integration


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=180
    )


def test_up_status_down_leaves_no_process(tmp_path: Path) -> None:
    port = kafka.free_port()
    data = str(tmp_path / "k")
    up = _cli("kafka", "up", "--port", str(port), "--data-dir", data)
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == f"127.0.0.1:{port}"
    info = kafka.status(Path(data))
    assert info is not None
    try:
        st = _cli("kafka", "status", "--data-dir", data)
        assert st.returncode == 0 and f"127.0.0.1:{port}" in st.stdout
        again = _cli("kafka", "up", "--port", str(port), "--data-dir", data)
        assert again.returncode == 0, "up on a running broker is idempotent"
    finally:
        down = _cli("kafka", "down", "--data-dir", data)
    assert down.returncode == 0
    assert (
        not Path(f"/proc/{info.pid}").exists()
        or b"kafka.Kafka" not in Path(f"/proc/{info.pid}/cmdline").read_bytes()
    )
    assert _cli("kafka", "status", "--data-dir", data).returncode == 3


def test_port_taken_fails_fast_naming_the_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _cli("kafka", "up", "--port", str(port), "--data-dir", str(tmp_path / "k"))
    assert res.returncode == 2
    assert f"port {port} is already in use" in res.stderr


def test_missing_java_says_what_to_install(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path), "HOME": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "app", "kafka", "up", "--port", str(kafka.free_port()),
         "--data-dir", str(tmp_path / "k")],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert res.returncode == 2
    assert "java and mvn not found" in res.stderr
