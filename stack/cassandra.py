"""A single-node Apache Cassandra on loopback, for the Alert Production Database (APDB).

Rubin's production APDB is Cassandra. No Debian package and no Docker engine exist on the project's
machines, so the node runs `CassandraDaemon` straight from the jars `make setup` fetched from Maven
Central (`stack/cassandra-pom.xml`), with a generated `cassandra.yaml`.

A node lives in its own folder, `$PROMPT_STREAMS_HOME/cassandra/stacks/<name>` by default: data, commitlog,
saved caches, hints, its log and `state.json`, which records what runs. It is deliberately not
inside the Kafka cluster's folder `$PROMPT_STREAMS_HOME/stacks/<name>`: `Cluster.down()` (also called by `up()`
on a half-dead cluster) stops every JVM whose command line names that folder, and would take
Cassandra with it.

Start-up measured here (2 cores, 24 GB, Java 17, Cassandra 5.0.6), from `java` to the first answered
CQL query: 4.3-5.8 s on an idle machine, fresh folder or not (skipping the wait for gossip to settle
saves about 8 s of it); 8-15 s while other JVMs and tests share the 2 cores. `down` takes about 3 s:
SIGTERM makes Cassandra flush its memtables first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from stack.cluster import (
    LOCAL_DIR,
    StackError,
    die_with_parent,
    port_open,
    terminate,
    wait_until,
)
from stack.java import find_java, java_candidates, major_version
from streams.ops.workers import free_port

CASSANDRA_LIB = LOCAL_DIR / "cassandra" / "lib"
NATIVE_PORT = 9042
STORAGE_PORT = 7000
HOST = "127.0.0.1"

HEAP = ("-Xms1g", "-Xmx2g")
"""Cassandra sizes its memtables and caches from the heap; 2 GB is plenty for one visit's APDB
writes and leaves the 24 GB machine to Kafka, the workers and the page cache."""

JVM_OPTIONS = (
    # From Cassandra 5.0's conf/jvm-server.options (the general part; -ea and AlwaysPreTouch left out:
    # both slow a test node down and buy nothing here). Exit on OutOfMemoryError, as its start-up check
    # asks, rather than a 2 GB heap dump in the node's folder.
    "-XX:+UseThreadPriorities", "-XX:+ExitOnOutOfMemoryError", "-Xss256k",
    "-XX:+UseTLAB", "-XX:+ResizeTLAB", "-XX:+PerfDisableSharedMem", "-Djava.net.preferIPv4Stack=true",
    # conf/jvm17-server.options: G1 ...
    "-XX:+UseG1GC", "-XX:+ParallelRefProcEnabled", "-XX:MaxTenuringThreshold=1", "-XX:G1HeapRegionSize=16m",
    "-XX:G1RSetUpdatingPauseTimePercent=5", "-XX:MaxGCPauseMillis=300", "-XX:InitiatingHeapOccupancyPercent=70",
)

JVM17_MODULE_OPTIONS = (
    # ... and its JPMS list. Without these, Cassandra 5.0.6 dies at once on Java 17 (tried here): its
    # FileUtils cannot reach sun.nio.ch.DirectBuffer.cleaner (IllegalAccessException); jamm, chronicle
    # and netty reach into the JDK too.
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "--add-opens", "java.base/java.nio=ALL-UNNAMED",
    # Netty direct buffers through Unsafe, and its pre-4.1.75 allocator defaults (as Cassandra ships).
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true", "-Dio.netty.allocator.maxOrder=11",
)

FAST_START = (
    # One node, nobody to gossip with: do not wait for gossip to settle (about 8 s otherwise).
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    # ... nor to announce its shutdown to peers it does not have (2 s of every `down`).
    "-Dcassandra.shutdown_announce_in_ms=0",
)

LOGBACK_XML = """<configuration scan="false">
  <!-- Written by stack/cassandra.py: INFO to stdout, which the stack sends to logs/cassandra.log. -->
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <logger name="org.apache.cassandra" level="INFO"/>
  <logger name="com.datastax" level="WARN"/>
  <logger name="io.netty" level="WARN"/>
  <logger name="net.openhft" level="WARN"/>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
</configuration>
"""


@dataclass(frozen=True)
class CassandraState:
    """What `state.json` records about a running node."""

    name: str
    host: str
    native_port: int
    storage_port: int
    pid: int
    log: str


@cache
def cassandra_java() -> Path:
    """A Java 17: Cassandra 5.0 runs on 11 and 17 only, and `find_java(17)` may find a newer one first.

    On this machine's Java 25 (temurin) it dies at start: its security manager's Policy.setPolicy throws.

    Raises:
        StackError: no Java 17 is installed.
    """
    for java in (find_java(17), *java_candidates()):
        if major_version(java) == 17:
            return java
    raise StackError("Cassandra 5.0 needs Java 17 (or 11); none found")


def _cql_answers(port: int) -> bool:
    """Whether the node answers a real CQL query: an open port alone comes before schema is ready."""
    if not port_open(port):
        return False
    # Imported here: the driver takes 0.2 s to import, and `python -m stack` without --cassandra never uses it.
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy(), request_timeout=5)
    cluster = Cluster([HOST], port=port, connect_timeout=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    try:
        row = cluster.connect().execute("SELECT release_version FROM system.local").one()
        return row is not None
    except Exception:  # the driver raises NoHostAvailable, OperationTimedOut, ConnectionException...
        return False
    finally:
        cluster.shutdown()


def _errors(log: Path, lines: int = 10) -> str:
    """The log's first ERROR and exception lines: on a failed start its tail is only shutdown-hook chatter."""
    try:
        found = [line for line in log.read_text(errors="replace").splitlines()
                 if line.startswith("ERROR") or "Exception" in line.split(" ", 1)[0] or line.startswith("Caused by")]
    except OSError:
        return "(no log)"
    return "\n".join(found[:lines]) or "(none logged)"


class Cassandra:
    """One Cassandra node rooted in a folder of its own, on loopback.

    Args:
        name: a label (the cluster name Cassandra reports), also the default folder name.
        native_port: the CQL port clients use; 0 picks a free one when the node starts.
        storage_port: the inter-node port (bound even by a single node); 0 picks a free one.
        root: the folder for data, logs and state; defaults to `$PROMPT_STREAMS_HOME/cassandra/stacks/<name>`.
        bound_to_parent: the JVM receives SIGTERM when the process that started it dies
            (pytest fixtures use this, so a killed test run leaves no JVM behind).
    """

    def __init__(self, name: str = "main", native_port: int = NATIVE_PORT, storage_port: int = STORAGE_PORT,
                 root: Path | None = None, *, bound_to_parent: bool = False) -> None:
        self.name = name
        self.native_port = native_port
        self.storage_port = storage_port
        self.root = (root or LOCAL_DIR / "cassandra" / "stacks" / name).resolve()
        self.bound_to_parent = bound_to_parent
        self.config = self.root / "cassandra.yaml"
        self.log = self.root / "logs" / "cassandra.log"
        self._state_file = self.root / "state.json"

    # -- queries -------------------------------------------------------------------------------
    def status(self) -> CassandraState | None:
        """The running node recorded in `state.json`, or None if it is not running or not answering."""
        try:
            state = CassandraState(**json.loads(self._state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if self._is_ours(state.pid) and _cql_answers(state.native_port):
            return state
        return None

    # -- life ----------------------------------------------------------------------------------
    def up(self, timeout: float = 180.0) -> CassandraState:
        """Start the node, or return the one already running; it answers CQL when this returns.

        Raises:
            StackError: the jars are missing, or the node exits or does not answer in time
                (the message names the log and quotes its tail and its errors).
        """
        if running := self.status():
            return running
        self.down()  # a half-dead node: clear it before starting afresh
        if not any(CASSANDRA_LIB.glob("cassandra-all-*.jar")):
            raise StackError(f"no Cassandra jars in {CASSANDRA_LIB}: run `python -m stack fetch --cassandra` "
                             "(`make setup` in a checkout)")
        native_port = self.native_port or free_port()
        storage_port = self.storage_port or free_port()
        for folder in ("data", "commitlog", "saved_caches", "hints", "cdc_raw", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._write_config(native_port, storage_port)
        self.log.write_bytes(b"")
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                self._command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root,
                preexec_fn=die_with_parent if self.bound_to_parent else os.setsid,
            )
        try:
            wait_until(lambda: _cql_answers(native_port), proc, self.log, "Cassandra", timeout)
        except StackError as error:
            self._terminate([proc.pid])
            raise StackError(f"{error}\nits errors:\n{_errors(self.log)}") from None
        except BaseException:
            self._terminate([proc.pid])
            raise
        state = CassandraState(self.name, HOST, native_port, storage_port, proc.pid, str(self.log))
        self._state_file.write_text(json.dumps(asdict(state), indent=2))
        return state

    def down(self, timeout: float = 60.0) -> None:
        """Stop the node (SIGTERM, then SIGKILL) and any other JVM still running from the folder."""
        self._terminate(sorted(self._jvms()), timeout)
        self._state_file.unlink(missing_ok=True)

    # -- steps ---------------------------------------------------------------------------------
    def _write_config(self, native_port: int, storage_port: int) -> None:
        """cassandra.yaml for one node that owns the whole ring, sized for a 2-core machine."""
        settings: dict[str, object] = {
            "cluster_name": self.name,
            "num_tokens": 1,
            "initial_token": 0,  # no token allocation on first start
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "seed_provider": [{"class_name": "org.apache.cassandra.locator.SimpleSeedProvider",
                               "parameters": [{"seeds": f"{HOST}:{storage_port}"}]}],
            "listen_address": HOST,
            "rpc_address": HOST,
            "storage_port": storage_port,
            "native_transport_port": native_port,
            "start_native_transport": True,
            "authenticator": "AllowAllAuthenticator",
            "authorizer": "AllowAllAuthorizer",
            "role_manager": "CassandraRoleManager",
            "data_file_directories": [str(self.root / "data")],
            "commitlog_directory": str(self.root / "commitlog"),
            "saved_caches_directory": str(self.root / "saved_caches"),
            "hints_directory": str(self.root / "hints"),
            "cdc_raw_directory": str(self.root / "cdc_raw"),
            "commitlog_sync": "periodic",
            "commitlog_sync_period": "10000ms",
            "commitlog_segment_size": "32MiB",
            # Two cores: few threads, small memtables and caches.
            "concurrent_reads": 4,
            "concurrent_writes": 8,
            "concurrent_counter_writes": 4,
            "concurrent_materialized_view_writes": 2,
            "concurrent_compactors": 1,
            "memtable_flush_writers": 1,
            "memtable_heap_space": "256MiB",
            "memtable_offheap_space": "256MiB",
            "native_transport_max_threads": 32,
            "key_cache_size": "32MiB",
            "file_cache_size": "128MiB",
            # dax_apdb writes batches of up to 1 MB (its batch_size_limit) and asks the server to accept them.
            "batch_size_warn_threshold": "1MiB",
            "batch_size_fail_threshold": "8MiB",
            "hinted_handoff_enabled": False,  # nobody to hand hints to
            "auto_snapshot": False,  # dropping a test keyspace need not copy it
        }
        self.config.write_text(json.dumps(settings, indent=2) + "\n")  # JSON is YAML
        (self.root / "logback.xml").write_text(LOGBACK_XML)

    def _command(self) -> list[str]:
        jamm = sorted(CASSANDRA_LIB.glob("jamm-*.jar"))
        return [
            str(cassandra_java()), *HEAP, *JVM_OPTIONS, *JVM17_MODULE_OPTIONS, *FAST_START,
            # Cassandra measures memtable sizes with jamm as an agent, as bin/cassandra does.
            *(f"-javaagent:{jar}" for jar in jamm[-1:]),
            f"-Dcassandra.config=file://{self.config}",
            f"-Dcassandra.storagedir={self.root}",
            f"-Dcassandra.logdir={self.root / 'logs'}",
            f"-Dlogback.configurationFile={self.root / 'logback.xml'}",
            "-Dcassandra-foreground=yes",  # keep stdout and stderr open (they go to the log)
            "-cp", f"{CASSANDRA_LIB}/*", "org.apache.cassandra.service.CassandraDaemon",
        ]

    def _jvms(self) -> list[int]:
        """Every live JVM started with this folder's cassandra.yaml (exact, so `a` never matches `ab`)."""
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and self._is_ours(int(proc.name)):
                pids.append(int(proc.name))
        return pids

    def _is_ours(self, pid: int) -> bool:
        """Whether `pid` is alive and is this folder's Cassandra (guards against pid reuse)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"-Dcassandra.config=file://{self.config}".encode() in argv

    def _terminate(self, pids: list[int], timeout: float = 60.0) -> None:
        terminate(pids, self._is_ours, timeout)


def create_apdb(host: str, port: int, keyspace: str, config_path: Path) -> Path:
    """Create the APDB schema in `keyspace` with dax_apdb's own CLI; return its config file.

    `lsst.dax.apdb.Apdb.from_uri(str(path))` opens the result. Replication factor 1: one node.

    Raises:
        StackError: apdb-cli failed (its output is in the message).
    """
    cli = Path(sys.executable).parent / "apdb-cli"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    command = [str(cli), "create-cassandra", "--port", str(port), "--replication-factor", "1",
               host, keyspace, str(config_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise StackError(f"apdb-cli create-cassandra failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return config_path

