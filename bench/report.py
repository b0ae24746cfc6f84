"""Where benchmark results go and how they are named: bench/results/<kind>-<UTC stamp>.{json,md}."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def save(kind: str, when: str, result: dict[str, Any], md: str) -> None:
    """Write the figures as JSON and the report as Markdown, side by side."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{kind}-{when}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{kind}-{when}.md").write_text(md)
