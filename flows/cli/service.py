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
    ids = register(build_deployments(settings, args.source))
    specs = {s.name: s for s in deployment_specs(settings, args.source)}
    for full_name, dep_id in ids.items():
        spec = specs[full_name.split("/", 1)[1]]
        when = "on demand" if not spec.cron else f"cron '{spec.cron}' {settings.schedule_timezone}" + (
            "" if spec.schedule_active else " (inactive: no default source; give --source or MMRAG_SOURCE)")
        print(f"{full_name}  {dep_id}  {when}")
    print(f"registered {len(ids)} deployments (store {settings.store}); run them with: mmrag worker")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Serve the deployments' flow runs until stopped."""
    from flows.deployments import build_deployments, serve_deployments

    settings = command_settings(args)
    serve_deployments(build_deployments(settings, args.source),
                      args.limit if args.limit is not None else settings.worker_limit)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the HTTP query API and search page until stopped."""
    import uvicorn

    from mmrag_core.service import create_app

    settings = command_settings(args, service_host=args.host, service_port=args.port)
    print(f"mmrag serve: store {settings.store} on http://{settings.service_host}:{settings.service_port} "
          f"(search page /, API docs /docs)", file=sys.stderr)
    uvicorn.run(create_app(settings, pinned_snapshot=args.snapshot), host=settings.service_host,
                port=settings.service_port, log_level="info")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings as JSON."""
    print(json.dumps(command_settings(args).model_dump(mode="json"), indent=2))  # secrets print as ****
    return 0
