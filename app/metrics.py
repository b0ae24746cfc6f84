"""Domain metrics on an injected registry; no customer_id ever becomes a label."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CASE_BUCKETS = (600, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 3 * 86400, 7 * 86400)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


@dataclass(frozen=True)
class ServiceMetrics:
    """Every domain metric the worker exports under ``feedback_*``."""

    registry: CollectorRegistry
    events: Counter
    dead_letters: Counter
    alerts: Counter
    rekeyed: Counter
    batch_seconds: Histogram
    batch_phase_seconds: Counter
    delivery_step_seconds: Counter
    batch_size: Histogram
    event_latency: Histogram
    event_time_lag: Histogram
    alert_latency: Histogram
    customers: Gauge
    customers_by_tier: Gauge
    customers_by_risk: Gauge
    pareto_cutoff: Gauge
    segment_nps: Gauge
    consumer_lag: Gauge
    table_keys: Gauge
    segment_responses: Gauge
    lapsed: Gauge
    lapses: Counter
    won_back: Counter
    swept: Counter
    partitions_indexed: Counter
    sweep_pending: Gauge
    sweep_due: Gauge
    churn_rate: Gauge
    erasures: Counter
    case_time_to_ack: Histogram
    case_time_to_contact: Histogram
    cases_contacted: Counter
    recovered: Counter
    cases_open: Gauge
    cases_overdue: Gauge
    churn_lost: Gauge
    churn_revenue_lost: Gauge
    churn_safety_line: Gauge
    churn_above_line: Gauge
    restored_records: Counter
    restore_seconds: Counter
    gc_pause: Histogram
    loop_lag: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> ServiceMetrics:
        reg = registry if registry is not None else CollectorRegistry()
        made = cls(
            registry=reg,
            events=Counter(
                "feedback_events",
                "Input events by type and outcome",
                ["event_type", "outcome"],
                registry=reg,
            ),  # fmt: skip
            dead_letters=Counter(
                "feedback_dead_letters",
                "Records sent to the dead-letter topic, by reason",
                ["reason", "topic"],
                registry=reg,
            ),  # fmt: skip
            alerts=Counter("feedback_alerts", "Alerts emitted, by rule", ["rule"], registry=reg),
            rekeyed=Counter(
                "feedback_rekeyed_records",
                "Records whose key or partition disagreed with customer_id, re-routed",
                ["topic"],
                registry=reg,
            ),  # fmt: skip
            batch_seconds=Histogram(
                "feedback_batch_processing_seconds",
                "Time to process one batch",
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),  # fmt: skip
            batch_phase_seconds=Counter(
                "feedback_batch_phase_seconds",
                "Time spent in each phase of the batches: fold (deciding), deliver "
                "(producing and storing), after (caches and metrics); idle_sweep: the sweep's "
                "chunks while no records wait, all three phases",
                ["phase"],
                registry=reg,
            ),
            delivery_step_seconds=Counter(
                "feedback_delivery_step_seconds",
                "Wall time of each step of the deliver phase, in its write order: alerts and "
                "tallies (sent together; each counted from the start of the phase to its "
                "acknowledgement), states (with dead letters and re-routed records), "
                "erasures; each waits for the broker's acknowledgement",
                ["step"],
                registry=reg,
            ),
            gc_pause=Histogram(
                "feedback_gc_pause_seconds",
                "Pauses of the Python garbage collector (the whole process stops), by generation",
                ["generation"],
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=reg,
            ),  # fmt: skip
            loop_lag=Histogram(
                "feedback_event_loop_lag_seconds",
                "How late the worker's event loop woke a task that slept LOOP_PROBE_S: time the "
                "loop was held by one piece of work (a batch, a timer), which every record and "
                "HTTP request arriving meanwhile waits out",
                buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                registry=reg,
            ),  # fmt: skip
            batch_size=Histogram(
                "feedback_batch_events",
                "Events per processed batch",
                buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000),
                registry=reg,
            ),  # fmt: skip
            event_latency=Histogram(
                "feedback_event_latency_seconds",
                "From the record's produce timestamp to its processing",
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),  # fmt: skip
            alert_latency=Histogram(
                "feedback_alert_latency_seconds",
                "From the trigger record's produce timestamp to the alert being sent",
                buckets=LATENCY_BUCKETS,
                registry=reg,
            ),  # fmt: skip
            customers=Gauge(
                "feedback_customers", "Customers in this worker's table partitions", registry=reg
            ),
            customers_by_tier=Gauge(
                "feedback_customers_by_tier",
                "Customers by value tier (this worker)",
                ["tier"],
                registry=reg,
            ),  # fmt: skip
            customers_by_risk=Gauge(
                "feedback_customers_by_churn_risk",
                "Customers by churn-risk bucket (this worker)",
                ["bucket"],
                registry=reg,
            ),  # fmt: skip
            pareto_cutoff=Gauge(
                "feedback_pareto_cutoff_revenue",
                "Trailing revenue at the tier boundary over all customers",
                ["tier"],
                registry=reg,
            ),  # fmt: skip
            segment_nps=Gauge(
                "feedback_segment_nps",
                "NPS per segment over a rolling event-time window",
                ["segment", "window"],
                registry=reg,
            ),  # fmt: skip
            segment_responses=Gauge(
                "feedback_segment_responses",
                "Survey responses per segment and window",
                ["segment", "window"],
                registry=reg,
            ),  # fmt: skip
            consumer_lag=Gauge(
                "feedback_consumer_lag_records",
                "Records between the partition's end and what this worker has processed",
                ["topic", "partition"],
                registry=reg,
            ),  # fmt: skip
            table_keys=Gauge(
                "feedback_table_keys",
                "Keys in this worker's copy of a table",
                ["table"],
                registry=reg,
            ),  # fmt: skip
            lapsed=Gauge(
                "feedback_customers_lapsed",
                "Customers now lapsed (P(alive) below the lapse setting), this worker",
                registry=reg,
            ),  # fmt: skip
            lapses=Counter(
                "feedback_lapses", "Customers that lapsed (P(alive) fell below the setting)",
                registry=reg,
            ),  # fmt: skip
            won_back=Counter(
                "feedback_won_back", "Lapsed customers who bought again", registry=reg
            ),
            swept=Counter(
                "feedback_sweep_rescored",
                "Customers re-scored because stream time moved on (not because of an event)",
                registry=reg,
            ),  # fmt: skip
            partitions_indexed=Counter(
                "feedback_partitions_indexed",
                "Input partitions whose customers were indexed (read model, revenue mirror) "
                "after an assignment: one per partition per rebalance that moved it here",
                registry=reg,
            ),  # fmt: skip
            sweep_pending=Gauge(
                "feedback_sweep_scheduled_customers",
                "Customers with a scheduled re-score, this worker",
                registry=reg,
            ),  # fmt: skip
            sweep_due=Gauge(
                "feedback_sweep_due_customers",
                "Customers whose re-score is due as of stream time: the sweep's backlog",
                registry=reg,
            ),  # fmt: skip
            case_time_to_ack=Histogram(
                "feedback_case_time_to_acknowledge_seconds",
                "From the alert (event time) to CRM's first acknowledgement",
                buckets=CASE_BUCKETS, registry=reg,
            ),  # fmt: skip
            case_time_to_contact=Histogram(
                "feedback_case_time_to_contact_seconds",
                "From the alert (event time) to CRM's first contact with the customer",
                buckets=CASE_BUCKETS, registry=reg,
            ),  # fmt: skip
            cases_contacted=Counter(
                "feedback_cases_contacted", "Cases whose customer CRM contacted, by group",
                ["group"], registry=reg,
            ),  # fmt: skip
            recovered=Counter(
                "feedback_detractors_recovered",
                "Contacted detractors whose next answer was passive or promoter, by group",
                ["group"], registry=reg,
            ),  # fmt: skip
            cases_open=Gauge(
                "feedback_cases_open", "Open cases by age (event time), this worker",
                ["age"], registry=reg,
            ),  # fmt: skip
            cases_overdue=Gauge(
                "feedback_cases_overdue", "Open cases not contacted within the contact SLA",
                registry=reg,
            ),  # fmt: skip
            erasures=Counter(
                "feedback_erasures", "Erasure requests carried out (customers forgotten)",
                registry=reg,
            ),  # fmt: skip
            churn_rate=Gauge(
                "feedback_churn_rate",
                "Churn rate of a period (lost = lapsed in it); convention end = lost / "
                "customers_at_end (the source's), start = lost / customers_at_start",
                ["period", "which", "group", "convention"],
                registry=reg,
            ),  # fmt: skip
            churn_lost=Gauge(
                "feedback_churn_lost_customers", "Customers lost (lapsed) in the period",
                ["period", "which", "group"], registry=reg,
            ),  # fmt: skip
            churn_revenue_lost=Gauge(
                "feedback_churn_revenue_lost", "Trailing revenue of the customers lost in the "
                "period (base currency)", ["period", "which", "group"], registry=reg,
            ),  # fmt: skip
            churn_safety_line=Gauge(
                "feedback_churn_safety_line",
                "Highest acceptable churn rate for the period (from the annual setting)",
                ["period", "which", "group"], registry=reg,
            ),  # fmt: skip
            churn_above_line=Gauge(
                "feedback_churn_above_safety_line",
                "1 when the period's churn rate is above the safety line (a warning)",
                ["period", "which", "group"], registry=reg,
            ),  # fmt: skip
            event_time_lag=Histogram(
                "feedback_event_time_lag_seconds",
                "From the event's occurred_at (event time) to its processing",
                buckets=(1, 10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400),
                registry=reg,
            ),  # fmt: skip
            restored_records=Counter(
                "feedback_changelog_restored_records",
                "Changelog records written to the local store by the bulk restore, by table "
                "(what Faust's own recovery reads after it is in faust_*)",
                ["table"], registry=reg,
            ),  # fmt: skip
            restore_seconds=Counter(
                "feedback_changelog_restore_seconds",
                "Time spent in the bulk restore of changelogs (all tables)", registry=reg,
            ),  # fmt: skip
        )
        # Labelled counters appear on /metrics once a label is used: show "overall" at 0.
        made.cases_contacted.labels("overall")
        made.recovered.labels("overall")
        return made
