"""SASL/SCRAM-SHA-512 over TLS to a real broker with a certificate made at test time."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.local import kafka

from .harness import Worker, event, poll, worker_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[kafka.Secure]:
    data = tmp_path_factory.mktemp("secure-kafka")
    secure = kafka.make_secure(data, kafka.free_port())
    kafka.up(port=kafka.free_port(), data_dir=data, heap="512m", secure=secure)
    try:
        yield secure
    finally:
        kafka.down(data)


def secure_env(secure: kafka.Secure, tmp: Path, password: str) -> dict[str, str]:
    return worker_env(
        f"127.0.0.1:{secure.port}", uuid.uuid4().hex[:10], tmp / "data",
        FEEDBACK_SASL_MECHANISM="SCRAM-SHA-512", FEEDBACK_SASL_USERNAME=secure.username,
        FEEDBACK_SASL_PASSWORD=password, FEEDBACK_KAFKA_TLS="true",
        FEEDBACK_KAFKA_CA_FILE=str(secure.ca_file),
    )  # fmt: skip


def test_worker_over_scram_and_tls(secure_broker: kafka.Secure, tmp_path: Path) -> None:
    env = secure_env(secure_broker, tmp_path, secure_broker.password)
    worker = Worker(env, tmp_path / "worker.log")
    worker.start(timeout=180)
    try:
        from app.settings import load_settings

        settings = load_settings(**{k.removeprefix("FEEDBACK_").lower(): v for k, v in env.items()
                                    if k.startswith("FEEDBACK_")})  # fmt: skip
        raw = event("survey", "sec-1", "sec", "2026-01-01T00:00:00Z", score=10)

        async def send() -> None:
            from aiokafka import AIOKafkaProducer

            producer = AIOKafkaProducer(**settings.client_kwargs())
            await producer.start()
            try:
                await producer.send_and_wait(env["FEEDBACK_TOPIC_SURVEYS"], raw, key=b"sec")
            finally:
                await producer.stop()

        asyncio.run(send())
        poll(lambda: worker.get("/customers/sec")[0] == 200, 90, "the event over SASL_SSL", worker)
        assert worker.get("/customers/sec")[1]["band"] == "promoter"
        assert secure_broker.password not in worker.log.read_text(errors="replace")
    finally:
        worker.stop()


def test_wrong_password_fails_at_start_naming_the_setting(
    secure_broker: kafka.Secure, tmp_path: Path
) -> None:
    env = secure_env(secure_broker, tmp_path, "not-the-password")
    done = subprocess.run([sys.executable, "-m", "app", "worker"], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "FEEDBACK_SASL_PASSWORD" in done.stderr and "not-the-password" not in done.stderr
    untrusted = {**env, "FEEDBACK_SASL_PASSWORD": secure_broker.password}
    untrusted.pop("FEEDBACK_KAFKA_CA_FILE")  # the system bundle does not know our certificate
    done = subprocess.run([sys.executable, "-m", "app", "worker"], env=untrusted,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and "FEEDBACK_KAFKA_CA_FILE" in done.stderr
