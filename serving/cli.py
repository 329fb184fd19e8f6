"""``veil serve --config FILE``: run the Veil Serve app (Ray imported only when run)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from contextlib import ExitStack, suppress
from typing import Any

from pipeline.io.report import UsageError
from serving.config import ServingConfigError, load_config

logger = logging.getLogger(__name__)


def add_serve_parser(sub: Any) -> None:
    """Add the ``serve`` command to the ``veil`` subparsers (imports nothing heavy)."""
    serve = sub.add_parser("serve", help="run the model deployments on Ray Serve")
    serve.add_argument("--config", required=True, metavar="FILE",
                       help="serving configuration (see serving/config.yaml)")
    serve.add_argument("--check", action="store_true",
                       help="validate the configuration and exit")
    serve.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace, err: Any) -> int:
    """Validate the configuration, start (or join) Ray, deploy, and wait for Ctrl-C."""
    try:
        config = load_config(args.config)
    except ServingConfigError as exc:
        raise UsageError(str(exc)) from exc
    if args.check:
        print(f"{args.config}: valid; deployments: {', '.join(config.deployments())}")
        return 0
    import ray
    from ray import serve

    from serving import netns
    from serving.deployments import deploy

    with ExitStack() as stack:
        local = config.ray.address is None
        if local and config.ray.isolate_network:
            stack.enter_context(netns.isolated_network())
        ray.init(
            address=config.ray.address, include_dashboard=False,
            num_cpus=config.ray.num_cpus if local else None,
            num_gpus=config.ray.num_gpus if local else None,
            _node_ip_address="127.0.0.1" if local else None,
        )
        stack.callback(ray.shutdown)
        deploy(config)
        if not local:  # on a shared cluster remove only this app; a local Ray goes whole
            stack.callback(serve.delete, config.app_name)
        print(f"Veil Serve app {config.app_name!r} running "
              f"({', '.join(config.deployments())}); Ctrl-C to stop")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with suppress(KeyboardInterrupt):
            stop.wait()
    return 0
