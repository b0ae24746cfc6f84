"""HTTP: one customer's state (routed to the owning worker) and health."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import faust
from faust.web import Request, Response, View

from app.domain.churn_kpi import PERIODS
from app.domain.segments import WINDOWS

if TYPE_CHECKING:
    from app.streams.processor import BatchProcessor


def register(app: faust.App, processor: BatchProcessor) -> None:
    """Attach the views to the app's web server."""
    customers = processor.customers
    from app.streams.processor import load_state

    @app.page("/customers/{customer_id}")
    class CustomerView(View):
        @app.table_route(table=customers, match_info="customer_id")  # type: ignore[arg-type]
        async def get(self, request: Request, customer_id: str) -> Response:
            state = load_state(customers.get(customer_id.encode()))
            if state is None:
                return self.json({"error": "unknown customer", "customer_id": customer_id},
                                 status=404)  # fmt: skip
            return self.json(processor.customer_view(state))

    @app.page("/nps")
    class NpsView(View):
        async def get(self, request: Request) -> Response:
            window = request.query.get("window")
            segment = request.query.get("segment")
            if window is not None and window not in WINDOWS:
                return self.json(
                    {"error": f"window must be one of {sorted(WINDOWS)}", "window": window},
                    status=400,
                )
            return self.json(processor.segment_nps(window, segment))

    @app.page("/churn")
    class ChurnView(View):
        async def get(self, request: Request) -> Response:
            period = request.query.get("period", "month")
            if period not in PERIODS:
                return self.json({"error": f"period must be one of {list(PERIODS)}",
                                  "period": period}, status=400)  # fmt: skip
            group = request.query.get("segment")
            return self.json(processor.churn_report(period, group))

    @app.page("/at-risk")
    class AtRiskView(View):
        async def get(self, request: Request) -> Response:
            try:
                limit = max(1, min(500, int(request.query.get("limit", "20"))))
            except ValueError:
                return self.json({"error": "limit must be an integer"}, status=400)
            return self.json(
                {"scope": "this worker's partitions", "customers": processor.at_risk(limit)}
            )

    @app.page("/health")
    class HealthView(View):
        async def get(self, request: Request) -> Response:
            body: dict[str, Any] = {
                "status": "ok",
                "now": datetime.now(UTC).isoformat(),
                "assigned_partitions": len(app.assignor.assigned_actives()),
                "indexed_partitions": processor.indexed_partitions(),
            }
            return self.json(body)
