"""A Faust agent that does nothing with the input records: what Faust itself costs.

    NOOP_BOOTSTRAP=host:port NOOP_TOPICS=a,b,c NOOP_EVENTS=N NOOP_OUT=file NOOP_DATA=dir \\
        python -m bench.faust_noop worker -l warn

A floor of ``bench.throughput`` beside the aiokafka ones: the same records through Faust's
own per-message path (its fetch loop, conductor, channel and stream, an ack per record)
into an agent that takes them in batches (``Stream.take_events``) and only counts them.
No tables, no web server. Once it has counted ``NOOP_EVENTS`` records it writes
``{"events": n, "seconds": s}`` (from its first batch to its last) to ``NOOP_OUT``; the
bench stops it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import faust

BOOTSTRAP = os.environ["NOOP_BOOTSTRAP"]
TOPICS = os.environ["NOOP_TOPICS"].split(",")
EVENTS = int(os.environ["NOOP_EVENTS"])
OUT = Path(os.environ["NOOP_OUT"])

app = faust.App(
    f"noop-{os.getpid()}", broker=f"kafka://{BOOTSTRAP}", store="memory://",
    datadir=os.environ["NOOP_DATA"], web_enabled=False, key_serializer="raw",
    value_serializer="raw", consumer_auto_offset_reset="earliest", autodiscover=False,
    topic_allow_declare=False,
)  # fmt: skip
inputs = app.topic(*TOPICS, key_type=bytes, value_type=bytes)


@app.agent(inputs)
async def noop(stream: Any) -> None:
    """Count the records, batch by batch; nothing else."""
    seen, first = 0, 0.0
    async for batch in stream.take_events(5000, within=0.01):
        if not first:
            first = time.perf_counter()
        seen += len(batch)
        if seen >= EVENTS:
            elapsed = time.perf_counter() - first
            part = OUT.with_suffix(".part")
            part.write_text(json.dumps({"events": seen, "seconds": elapsed}))
            os.replace(part, OUT)  # the bench never reads half a file
            return


if __name__ == "__main__":
    app.main()
