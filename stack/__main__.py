"""`python -m stack fetch|up|down|status|env`: run the local Kafka broker and schema registry (and a Cassandra).

    python -m stack fetch [--cassandra]      # once: Kafka's and the registry's jars (Cassandra's) from Maven Central
    python -m stack up                       # the main cluster on 9092 (+9093 controller) and 8081
    python -m stack up --name chile --broker-port 9192 --controller-port 9193 --registry-port 8181
    eval "$(python -m stack env)"            # point Prompt Streams at the running main cluster
    python -m stack down --name chile
    python -m stack up --name secure --secure --broker-port 9292 --controller-port 9293 --registry-port 8281
    eval "$(python -m stack env --name secure)"   # SASL_SSL settings, as the workers' user
    eval "$(python -m stack env --name secure --role operators)"   # ... as an operator (summit, bridge too)
    python -m stack up --name chile --secure --as-chile --broker-port 9192 --controller-port 9193 --registry-port 8181
    eval "$(python -m stack env --name chile --as-chile)"   # the SAL bridge's PROMPT_STREAMS_CHILE_* settings
    python -m stack up --cassandra           # also a Cassandra for the APDB, CQL on 127.0.0.1:9042
    python -m stack down --cassandra         # stops both; without --cassandra, Cassandra keeps running
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from stack.acls import ADMIN, ClientRole, bindings, role_grants, role_security
from stack.cassandra import NATIVE_PORT, STORAGE_PORT, Cassandra
from stack.cluster import (
    LOCAL_DIR,
    STACK_DIR,
    Cluster,
    Ports,
    Security,
    StackError,
    credentials_env,
    settings_env,
    stored_passwords,
)
from streams.config import Settings, SettingsError


def secure(root: Path, chile: bool) -> Security:
    """A user per role (passwords kept in the cluster's folder) and their ACLs, for the settings in the
    environment: the topic names and the application id the ACLs name are those of `PROMPT_STREAMS_*`."""
    passwords = stored_passwords(root, [ADMIN, *ClientRole])
    return role_security(passwords, bindings(role_grants(Settings.from_env(), chile=chile)), chile=chile)


def fetch(cassandra: bool) -> int:
    """Fetch the stack's jars from Maven Central into PROMPT_STREAMS_HOME with Maven (the poms ship in the package;
    each is copied there first, so Maven writes nothing next to the installed package)."""
    for pom in ["pom.xml", *(["cassandra-pom.xml"] if cassandra else [])]:
        build = LOCAL_DIR / "maven" / pom.removesuffix(".xml")
        build.mkdir(parents=True, exist_ok=True)
        shutil.copy(STACK_DIR / pom, build / "pom.xml")
        done = subprocess.run(["mvn", "-B", "-q", "-f", str(build / "pom.xml"), f"-Dlocal.dir={LOCAL_DIR}", "package"],
                              check=False)
        if done.returncode:
            print(f"stack: mvn failed on {pom} ({done.returncode})", file=sys.stderr)
            return 2
    print(f"jars in {LOCAL_DIR}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and act on one cluster."""
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["fetch", "up", "down", "status", "env"])
    parser.add_argument("--name", default="main", help="cluster name (folder $PROMPT_STREAMS_HOME/stacks/NAME)")
    parser.add_argument("--broker-port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--registry-port", type=int, default=8081)
    parser.add_argument("--secure", action="store_true",
                        help="clients only on SASL_SSL with SCRAM-SHA-512 (a throwaway CA and generated passwords), "
                             "one user per role, Kafka ACLs and the registry behind basic auth")
    parser.add_argument("--as-chile", action="store_true",
                        help="up: the Chile side of the SAL bridge (with --secure, the bridge's ACLs there); "
                             "env: print the settings as the SAL bridge's PROMPT_STREAMS_CHILE_* variables")
    parser.add_argument("--role", choices=list(ClientRole),
                        help="env: whose credentials to print (default: workers, or bridge with --as-chile)")
    parser.add_argument("--cassandra", action="store_true",
                        help="up/down/status: also a single-node Cassandra (the APDB's database) next to the cluster")
    parser.add_argument("--cassandra-port", type=int, default=NATIVE_PORT, help="Cassandra's CQL port")
    parser.add_argument("--cassandra-storage-port", type=int, default=STORAGE_PORT,
                        help="Cassandra's inter-node port (bound even by one node)")
    args = parser.parse_args(argv)
    if args.cassandra and args.action == "env":
        parser.error("--cassandra applies to up, down and status")
    if args.action == "fetch":
        return fetch(args.cassandra)
    cassandra = Cassandra(args.name, args.cassandra_port, args.cassandra_storage_port) if args.cassandra else None
    root = LOCAL_DIR / "stacks" / args.name
    try:
        cluster = Cluster(args.name, Ports(args.broker_port, args.controller_port, args.registry_port), root,
                          security=secure(root, args.as_chile) if args.secure and args.action == "up" else None)
        if args.action == "up":
            state = cluster.up()
            print(f"{state.name}: Kafka at {state.bootstrap}, schema registry at {state.registry_url}")
            if cassandra:
                node = cassandra.up()
                print(f"{node.name}: Cassandra (CQL) at {node.host}:{node.native_port}, log {node.log}")
        elif args.action == "down":
            cluster.down()
            print(f"{args.name}: stopped")
            if cassandra:
                cassandra.down()
                print(f"{args.name}: Cassandra stopped")
        else:
            running = cluster.status()
            if running is None:
                print(f"{args.name}: not running", file=sys.stderr)
            elif args.action == "env":
                role = args.role or (ClientRole.BRIDGE if args.as_chile else ClientRole.WORKERS)
                env = settings_env(running) | credentials_env(root, role)
                if args.as_chile:
                    env = {k.replace("PROMPT_STREAMS_", "PROMPT_STREAMS_CHILE_", 1): v for k, v in env.items()}
                print("\n".join(f"export {k}={v}" for k, v in env.items()))
            else:
                print(f"{running.name}: Kafka at {running.bootstrap} (pid {running.broker_pid}), "
                      f"schema registry at {running.registry_url} (pid {running.registry_pid})")
            node_state = cassandra.status() if cassandra else None
            if cassandra and node_state is None:
                print(f"{args.name}: Cassandra not running", file=sys.stderr)
            elif node_state:
                print(f"{node_state.name}: Cassandra (CQL) at {node_state.host}:{node_state.native_port} "
                      f"(pid {node_state.pid})")
            if running is None or (cassandra and node_state is None):
                return 1
    except (StackError, SettingsError) as error:
        print(f"stack: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
