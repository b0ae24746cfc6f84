"""HTTP: one customer's state (routed to the owning worker), NPS, churn, at-risk, health.

Views that show customer data or business figures require ``Authorization: Bearer
<FEEDBACK_HTTP_TOKEN>`` when that setting is set (constant-time compare); ``/health``
and ``/metrics`` stay open for probes and Prometheus.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import faust
from faust.web import Request, Response, View

from app.domain.churn_kpi import PERIODS, Period
from app.domain.customer import CustomerState
from app.domain.segments import WINDOWS
from app.settings import Settings
from app.streams.store import load_state


class Reads(Protocol):
    """What the views read (app.streams.queries.Queries provides it)."""

    customers: Any  # the customers table: routing and the owning worker's read
    settings: Settings

    def customer_view(self, state: CustomerState) -> dict[str, Any]: ...
    def segment_nps(self, window: str | None, segment: str | None) -> dict[str, Any]: ...
    def churn_report(self, period: Period, group: str | None) -> dict[str, Any]: ...
    def cases(self, status: str | None, overdue: bool | None, limit: int) -> list[Any]: ...
    def at_risk(self, limit: int) -> list[dict[str, Any]]: ...
    def indexed_partitions(self) -> int: ...


Handler = Callable[..., Awaitable[Response]]


def bearer_ok(header: str | None, token: str | None) -> bool:
    """No token configured: open. Else the header must be ``Bearer <token>`` exactly."""
    if token is None:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())


def register(app: faust.App, processor: Reads) -> None:
    """Attach the views to the app's web server."""
    customers = processor.customers
    secret = processor.settings.http_token
    token = secret.get_secret_value() if secret is not None else None

    def protected(handler: Handler) -> Handler:
        """Refuse without the bearer token (before any routing to another worker)."""

        @functools.wraps(handler)
        async def check(self: View, request: Request, *args: Any, **kw: Any) -> Response:
            if not bearer_ok(request.headers.get("Authorization"), token):
                challenge = {"WWW-Authenticate": 'Bearer realm="feedback"'}
                return self.json({"error": "missing or wrong bearer token"}, status=401,
                                 headers=challenge)  # fmt: skip
            return await handler(self, request, *args, **kw)

        return check

    @app.page("/customers/{customer_id}")
    class CustomerView(View):
        @protected
        @app.table_route(table=customers, match_info="customer_id")  # type: ignore[arg-type]
        async def get(self, request: Request, customer_id: str) -> Response:
            state = load_state(customers.get(customer_id.encode()))
            if state is None:
                return self.json({"error": "unknown customer", "customer_id": customer_id},
                                 status=404)  # fmt: skip
            return self.json(processor.customer_view(state))

    @app.page("/nps")
    class NpsView(View):
        @protected
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
        @protected
        async def get(self, request: Request) -> Response:
            period = request.query.get("period", "month")
            if period not in PERIODS:
                return self.json({"error": f"period must be one of {list(PERIODS)}",
                                  "period": period}, status=400)  # fmt: skip
            group = request.query.get("segment")
            return self.json(processor.churn_report(period, group))

    @app.page("/cases")
    class CasesView(View):
        @protected
        async def get(self, request: Request) -> Response:
            status = request.query.get("status", "open")
            if status not in ("open", "acknowledged", "contacted"):
                return self.json({"error": "status must be open, acknowledged or contacted "
                                  "(closed cases are not listed)", "status": status},
                                 status=400)  # fmt: skip
            flag = request.query.get("overdue")
            overdue = None if flag is None else flag.lower() in ("1", "true", "yes")
            try:
                limit = max(1, min(1000, int(request.query.get("limit", "100"))))
            except ValueError:
                return self.json({"error": "limit must be an integer"}, status=400)
            found = processor.cases(status, overdue, limit)
            scope = request.query.get("scope", "all")
            if scope == "all":
                found += await _other_workers(request, limit)
                found.sort(key=lambda c: (c["opened_at"], c["customer_id"]))
            return self.json({"scope": scope, "cases": found[:limit]})

    async def _other_workers(request: Request, limit: int) -> list[dict[str, Any]]:
        """Each other worker's own cases (its ``scope=local`` answer), with the caller's token."""
        me = str(app.conf.canonical_url).rstrip("/")
        hosts = {str(h).rstrip("/") for h in app.router.tables_metadata()} - {me}
        query = {**request.query, "scope": "local", "limit": str(limit)}
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        out: list[dict[str, Any]] = []
        for host in sorted(hosts):
            try:
                async with app.http_client.get(f"{host}/cases", params=query,
                                               headers=headers) as r:  # fmt: skip
                    if r.status == 200:
                        out += (await r.json()).get("cases", [])
            except OSError:
                continue  # a worker going away: its cases are back once it is reassigned
        return out

    @app.page("/at-risk")
    class AtRiskView(View):
        @protected
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
