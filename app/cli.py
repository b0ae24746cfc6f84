"""The ``feedback`` command line (also ``python -m app``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from app.errors import ServiceError

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"


def _kafka(args: argparse.Namespace) -> int:
    from app.local import kafka

    data_dir = Path(args.data_dir)
    if args.action == "up":
        start = time.monotonic()
        secure = None
        if args.secure:
            if (data_dir / "logs" / "meta.properties").exists():
                _err(f"feedback: error: --secure needs a fresh --data-dir ({data_dir} is "
                     "formatted; its SCRAM users were set when it was)")  # fmt: skip
                return 2
            secure = kafka.make_secure(data_dir, args.secure_port or kafka.free_port())
        info = kafka.up(port=args.port, data_dir=data_dir, progress=_err, secure=secure)
        if secure is not None:
            _err(f"SASL_SSL (SCRAM-SHA-512) listener on 127.0.0.1:{secure.port}; client "
                 f"settings (user, password, CA file) in {data_dir / 'client.env'}")  # fmt: skip
        _err(f"Kafka {kafka.KAFKA_VERSION} ready in {time.monotonic() - start:.1f}s "
             f"(pid {info.pid}, data {info.data_dir})")  # fmt: skip
        print(info.bootstrap)
        return 0
    if args.action == "down":
        stopped = kafka.down(data_dir)
        _err("Kafka stopped" if stopped else f"no local Kafka runs from {data_dir}")
        return 0
    found = kafka.status(data_dir)
    if found is None:
        print(f"not running (data dir {data_dir.resolve()})")
        return 3
    print(f"running: pid {found.pid}, bootstrap {found.bootstrap}, data dir {found.data_dir}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from app.domain.events import json_schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stale = []
    for name, schema in json_schemas().items():
        text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
        path = out / name
        if args.action == "check":
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(path)
    if stale:
        _err(f"schemas out of date: {', '.join(stale)}; run `feedback schemas export`")
        return 1
    return 0


def _worker(argv: Sequence[str]) -> int:
    from app.settings import load_settings
    from app.streams.app import create_app
    from app.topics import ensure_topics_sync

    settings = load_settings()
    ensure_topics_sync(settings)
    faust_app = create_app(settings)
    sys.argv = ["feedback", "worker", *argv]
    faust_app.main()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedback", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local single-node Kafka (KRaft)")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.add_argument("--port", type=int, default=9092, help="client port (default 9092)")
    kafka.add_argument("--data-dir", default=".data/kafka", help="storage, log and pid file")
    kafka.add_argument("--secure", action="store_true",
                       help="also a SASL_SSL listener: a SCRAM-SHA-512 user and a TLS "
                            "certificate made now (credentials in <data-dir>/client.env)")
    kafka.add_argument("--secure-port", type=int, default=None, help="its port (default free)")
    kafka.set_defaults(func=_kafka)

    schemas = sub.add_parser("schemas", help="JSON Schema files generated from the models")
    schemas.add_argument("action", choices=["export", "check"])
    schemas.add_argument("--out", default=str(SCHEMAS_DIR))
    schemas.set_defaults(func=_schemas)

    sub.add_parser("worker", help="start a Faust worker; Faust's worker options follow",
                   add_help=False)  # fmt: skip
    sub.add_parser("demo", help="local Kafka + worker + simulated traffic, live view")
    sub.add_parser("simulate", help="publish realistic synthetic traffic")
    sub.add_parser("alerts", help="`alerts tail`: follow the alert topic")
    sub.add_parser("backtest", help="measure churn_risk against known outcomes (AUC, calibration)")
    sub.add_parser("shadow", help="run changed settings over the history, apart (then diff)")
    sub.add_parser("erase", help="forget a customer (GDPR erasure request)")
    sub.add_parser("churn", help="`churn report`: churn rate and loss per period, from a worker")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "worker":
            return _worker(argv[1:])
        if argv and argv[0] in _EXTRA:
            return _EXTRA[argv[0]](argv[1:])
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except ServiceError as exc:
        _err(f"feedback: error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 130


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _demo(argv: list[str]) -> int:
    from app.demo import main as demo_main

    return demo_main(argv)


def _simulate(argv: list[str]) -> int:
    from app.simulate.cli import main as simulate_main

    return simulate_main(argv)


def _alerts(argv: list[str]) -> int:
    from app.alerts_tail import main as alerts_main

    return alerts_main(argv)


def _backtest(argv: list[str]) -> int:
    from app.analysis.cli import main as backtest_main

    return backtest_main(argv)


def _shadow(argv: list[str]) -> int:
    from app.shadow import main_shadow

    return main_shadow(argv)


def _erase(argv: list[str]) -> int:
    from app.erase import main as erase_main

    return erase_main(argv)


def _churn(argv: list[str]) -> int:
    from app.churn_report import main as churn_main

    return churn_main(argv)


# Sub-commands with their own argument parsing.
_EXTRA: dict[str, Callable[[list[str]], int]] = {
    "demo": _demo,
    "simulate": _simulate,
    "alerts": _alerts,
    "backtest": _backtest,
    "churn": _churn,
    "erase": _erase,
    "shadow": _shadow,
}

if __name__ == "__main__":
    raise SystemExit(main())
