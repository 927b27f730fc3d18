"""The long-running side of ``mmrag``: ``deploy`` and ``worker`` (Prefect deployments), ``serve`` (the HTTP
query API), and ``config`` (the effective settings those run with)."""
from __future__ import annotations

import argparse
import json
import sys

from flows.cli.common import command_settings


def cmd_deploy(args: argparse.Namespace) -> int:
    """Register the deployments with the Prefect server and print each one's schedule."""
    from flows.deployments import build_deployments, deployment_specs, register

    settings = command_settings(args)
    ids = register(build_deployments(settings, args.source), args.pool)
    specs = {s.name: s for s in deployment_specs(settings, args.source)}
    for full_name, dep_id in ids.items():
        spec = specs[full_name.split("/", 1)[1]]
        when = "on demand" if not spec.cron else f"cron '{spec.cron}' {settings.schedule_timezone}" + (
            "" if spec.schedule_active else " (inactive: no default source; give --source or MMRAG_SOURCE)")
        print(f"{full_name}  {dep_id}  {when}")
    print(f"registered {len(ids)} deployments (store {settings.store}) on work pool {args.pool!r}; run them with: "
          f"mmrag worker --pool {args.pool}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the flow runs of the work pool's deployments until stopped; registers nothing."""
    from mmrag_core.config import load_settings

    from flows.deployments import run_worker

    settings = load_settings(args.config)
    print(f"mmrag worker: running the flow runs of work pool {args.pool!r} (deployments as 'mmrag deploy' "
          "registered them)", file=sys.stderr, flush=True)
    run_worker(args.pool, args.limit if args.limit is not None else settings.worker_limit)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP query API and search page until stopped."""
    import uvicorn

    from mmrag_core.service import create_app

    settings = command_settings(args, service_host=args.host, service_port=args.port)
    warning = exposure_warning(settings.service_host, settings.service_token is not None)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    from mmrag_core.storage.store import open_store

    store = open_store(settings)
    if not store.root_exists():
        print(f"mmrag serve: WARNING: store {store.uri} does not exist; every query answers 503 until a snapshot "
              "is published there (check --store or MMRAG_STORE)", file=sys.stderr, flush=True)
    print(f"mmrag serve: store {settings.store} on http://{settings.service_host}:{settings.service_port} "
          f"(search page /, API docs /docs)", file=sys.stderr)
    uvicorn.run(create_app(settings, pinned_snapshot=args.snapshot), host=settings.service_host,
                port=settings.service_port, log_level="info",
                proxy_headers=False)  # the app trusts X-Forwarded-* from service_forwarded_allow_ips itself
    return 0


def exposure_warning(host: str, has_token: bool) -> str | None:
    """A loud warning when the API would listen beyond this machine without a token: anyone who can reach the
    address could then query (and read thumbnails of) every indexed document."""
    if has_token or _loopback(host):
        return None
    bar = "!" * 100
    return (f"{bar}\nWARNING: mmrag serve listens on {host!r}, which is not a loopback address, and no service_token "
            "is set:\n  ANYONE who can reach this address can query the index and read its documents' text and "
            "thumbnails.\n  Set MMRAG_SERVICE_TOKEN (or service_token in the config), or listen on 127.0.0.1.\n"
            f"{bar}")


def _loopback(host: str) -> bool:
    """Whether ``host`` (an address or a name) only listens on this machine."""
    import ipaddress

    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings as JSON."""
    print(json.dumps(command_settings(args).model_dump(mode="json"), indent=2))  # secrets print as ****
    return 0
