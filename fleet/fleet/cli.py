"""`fleet ingest | analyze | generate` (see fleet/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path


def _ingest(args) -> int:
    from .ingest import Ingest, IngestOptions

    options = IngestOptions(
        broker=args.broker,
        dataset=args.dataset,
        state_dir=Path(args.state),
        topics=args.topic or ["#"],
        client_id=args.client_id,
        username=args.username,
        # The password comes from the environment so that it is not in the process list.
        password=os.environ.get("FLEET_MQTT_PASSWORD"),
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        insecure=args.insecure,
        roll_bytes=int(args.roll_mb * 1e6),
        roll_seconds=args.roll_seconds,
        status_every=args.status_every,
        duration=args.duration,
    )
    counts = Ingest(options).run()
    return 0 if counts.connects else 1


def _analyze(args) -> int:
    import ray

    from .analyze import Inputs, require_dataset, run
    from .dataset import Selection

    require_dataset(args.dataset)
    ray.init(address=args.ray_address, num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    inputs = Inputs(
        dataset=args.dataset,
        out=Path(args.out),
        selection=Selection(args.site or None, args.start, args.end),
        registry=args.registry,
        history=args.history,
        crews=args.crews,
        catalogue=args.catalogue,
        inventory=args.inventory,
        plan=args.plan,
        start=date.fromisoformat(args.plan_date) if args.plan_date else None,
        threshold=args.threshold,
        service_level=args.service_level,
    )
    print(json.dumps(run(inputs), indent=1, default=str))
    return 0


def _generate(args) -> int:
    from .generate import generate

    summary = generate(Path(args.sample), args.dataset, args.gateways, args.seed, Path(args.state))
    print(json.dumps(summary, indent=1))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleet", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    i = sub.add_parser("ingest", help="broker → Parquet dataset, exactly once")
    i.add_argument("--broker", required=True, help="mqtt://host:1883 or mqtts://host:8883")
    i.add_argument("--dataset", required=True, help="dataset URI: a path, file:///…, s3://…")
    i.add_argument("--state", required=True, help="local directory for the ledger and quarantine")
    i.add_argument("--topic", action="append", help="subscription (repeatable; default #)")
    i.add_argument("--client-id", default="millwright-fleet-ingest", help="fixed: it names the persistent session")
    i.add_argument("--username", help="password from $FLEET_MQTT_PASSWORD")
    i.add_argument("--ca-file")
    i.add_argument("--cert-file")
    i.add_argument("--key-file")
    i.add_argument("--insecure", action="store_true", help="skip certificate checks (testing only)")
    i.add_argument("--roll-mb", type=float, default=64.0)
    i.add_argument("--roll-seconds", type=float, default=60.0)
    i.add_argument("--status-every", type=float, default=10.0)
    i.add_argument("--duration", type=float, help="stop after this many seconds")
    i.set_defaults(run=_ingest)

    a = sub.add_parser("analyze", help="the five jobs on Ray Data, result tables and report.html")
    a.add_argument("--dataset", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--site", action="append", help="only these sites (repeatable)")
    a.add_argument("--start", help="first date (YYYY-MM-DD)")
    a.add_argument("--end", help="last date (YYYY-MM-DD)")
    for name in ("registry", "history", "crews", "catalogue", "inventory", "plan"):
        a.add_argument(f"--{name}")
    a.add_argument("--plan-date", help="the planning date for the work list (default today)")
    a.add_argument("--threshold", type=float, default=0.3, help="opportunity: share of the OEE gap")
    a.add_argument("--service-level", type=float, default=0.95)
    a.add_argument("--cpus", type=int, help="local Ray: CPUs to use (default all)")
    a.add_argument("--ray-address", help="an existing cluster (default: start a local Ray)")
    a.set_defaults(run=_analyze)

    g = sub.add_parser("generate", help="replicate recorded agent messages across N virtual gateways")
    g.add_argument("--sample", required=True, help="JSON lines of {topic, payload} captured from agents")
    g.add_argument("--dataset", required=True)
    g.add_argument("--state", required=True)
    g.add_argument("--gateways", type=int, default=10)
    g.add_argument("--seed", type=int, default=1)
    g.set_defaults(run=_generate)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as e:
        print(f"fleet {args.command}: {e}", file=sys.stderr)
        return 1
