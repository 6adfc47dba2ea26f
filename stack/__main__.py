"""`python -m stack up|down|status|env`: run the local Kafka broker and schema registry.

    python -m stack up                       # the main cluster on 9092 (+9093 controller) and 8081
    python -m stack up --name chile --broker-port 9192 --controller-port 9193 --registry-port 8181
    eval "$(python -m stack env)"            # point Prompt Streams at the running main cluster
    python -m stack down --name chile
"""

from __future__ import annotations

import argparse
import sys

from stack.cluster import Cluster, Ports, StackError, settings_env


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and act on one cluster."""
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status", "env"])
    parser.add_argument("--name", default="main", help="cluster name (folder .local/stacks/NAME)")
    parser.add_argument("--broker-port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--registry-port", type=int, default=8081)
    args = parser.parse_args(argv)
    cluster = Cluster(args.name, Ports(args.broker_port, args.controller_port, args.registry_port))
    try:
        if args.action == "up":
            state = cluster.up()
            print(f"{state.name}: Kafka at {state.bootstrap}, schema registry at {state.registry_url}")
        elif args.action == "down":
            cluster.down()
            print(f"{args.name}: stopped")
        else:
            running = cluster.status()
            if running is None:
                print(f"{args.name}: not running", file=sys.stderr)
                return 1
            if args.action == "env":
                print("\n".join(f"export {k}={v}" for k, v in settings_env(running).items()))
            else:
                print(f"{running.name}: Kafka at {running.bootstrap} (pid {running.broker_pid}), "
                      f"schema registry at {running.registry_url} (pid {running.registry_pid})")
    except StackError as error:
        print(f"stack: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
