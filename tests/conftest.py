"""Shared fixtures. The real Kafka starts only when an integration test asks for it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _clean_feedback_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the environment: tests must not see the developer's."""
    for key in list(os.environ):
        if key.startswith("FEEDBACK_") and key != "FEEDBACK_KAFKA_CACHE":
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real single-node Kafka (KRaft) per session, on a free port; yields host:port."""
    from app.local import kafka

    data_dir: Path = tmp_path_factory.mktemp("kafka")
    info = kafka.up(port=kafka.free_port(), data_dir=data_dir, heap="768m")
    try:
        yield info.bootstrap
    finally:
        kafka.down(data_dir)


@pytest.fixture
def unique() -> str:
    """A fresh uuid4 suffix for topics and consumer groups."""
    return uuid.uuid4().hex[:12]
