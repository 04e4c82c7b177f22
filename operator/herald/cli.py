"""The `herald` command: `herald run` (the operator), `herald callback-server` (the sidecar).

Both read their configuration from `HERALD_*` environment variables and the YAML file
named by `HERALD_CONFIG_FILE` (see `herald.config`); the flags here only pick what to run.
"""

from __future__ import annotations

import argparse
import sys

from herald import __version__
from herald.config import ConfigError, load


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald",
        description="Herald publishes ScheduledPosts through n8n at the right second. "
        "Configuration: HERALD_* environment variables and HERALD_CONFIG_FILE.",
    )
    parser.add_argument("--version", action="version", version=f"herald {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "run",
        help="run the operator (watches ScheduledPosts, dispatches them to n8n)",
        description="Run the operator: watch ScheduledPosts, dispatch due posts to n8n, "
        "retry, recover stale attempts. Serves /metrics on HERALD_METRICS_PORT and "
        "/healthz on HERALD_HEALTH_PORT.",
    )
    sub.add_parser(
        "callback-server",
        help="run the callback sidecar (receives n8n's outcome callbacks)",
        description="Run the callback sidecar: POST /v1/callbacks, GET /healthz, /readyz, "
        "/metrics and /openapi.json on HERALD_CALLBACK_HOST:HERALD_CALLBACK_PORT.",
    )
    sub.add_parser("crd", help="print the ScheduledPost CRD generated from the models")
    sub.add_parser("check-config", help="validate the configuration and print it (no secrets)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "crd":
            from herald.crdgen import render

            sys.stdout.write(render())
            return 0
        settings = load()
        if args.command == "check-config":
            sys.stdout.write(settings.model_dump_json(indent=2) + "\n")
            return 0
        if args.command == "run":
            from herald.controller import run

            return run(settings)
        from herald.callbacks import serve

        return serve(settings)
    except ConfigError as exc:
        sys.stderr.write(f"herald: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
