"""The life of one local cluster: a KRaft Kafka broker plus a schema registry, on loopback.

A cluster lives in its own folder (`$PROMPT_STREAMS_HOME/stacks/<name>` by default): Kafka's log directory,
the registry's H2 database, both JVMs' logs and `state.json`, which records what is running.
`up()` finds a running cluster from that file or starts one and waits until both answer;
`down()` stops both JVMs and sweeps any JVM still running from the folder, so none is orphaned.
Several clusters can run side by side (the Chile side of the SAL bridge is a second one).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AclBinding, AdminClient  # type: ignore[attr-defined]

from stack.java import find_java
from stack.tls import make_tls
from streams.config import Connection, default_home
from streams.errors import NonRetriableError
from streams.ops.workers import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout, for the tools that only run in one (tests, benchmarks, the README's generated parts)."""
LOCAL_DIR = default_home()
"""The jars and the clusters' folders: under PROMPT_STREAMS_HOME (`make` sets it to the checkout's .local/)."""
KAFKA_LIB = LOCAL_DIR / "kafka" / "lib"
REGISTRY_JAR = LOCAL_DIR / "apicurio" / "quarkus-run.jar"
STACK_DIR = Path(__file__).resolve().parent
CCOMPAT_PATH = "/apis/ccompat/v7"

BROKER_READY_LINE = "Kafka Server started"
PR_SET_PDEATHSIG = 1


class StackError(NonRetriableError, RuntimeError):
    """The stack could not be started or stopped; the message names the log to read."""


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one cluster; 0 means "pick a free one" (tests use that)."""

    broker: int = 9092
    controller: int = 9093
    registry: int = 8081

    def resolved(self) -> Ports:
        """The same ports with every 0 replaced by a currently free port."""
        return Ports(*(port or free_port() for port in (self.broker, self.controller, self.registry)))


@dataclass(frozen=True)
class Security:
    """SASL_SSL with SCRAM-SHA-512: the broker's own user and the client users to create."""

    admin_password: str
    users: tuple[tuple[str, str], ...] = ()
    """(user, password) pairs clients log in with."""

    admin: str = "admin"
    acls: tuple[AclBinding, ...] | None = None
    """ACLs created at start. With any (even none), the broker denies whatever no ACL allows and only the admin
    is a super user; None: every authenticated user may do anything."""
    registry_users: tuple[tuple[str, str, str], ...] = ()
    """(user, password, Apicurio role): with any, the registry answers only requests with HTTP basic auth
    (the admin is one more user, with role sr-admin)."""

    def admin_config(self, bootstrap: str, ca_file: str) -> dict[str, str | int | float | bool]:
        """librdkafka settings to connect as the admin."""
        return {"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": ca_file,
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": self.admin, "sasl.password": self.admin_password}

    def registry_properties(self) -> str:
        """Apicurio's (Quarkus's) settings for basic auth against its embedded users, roles enforced."""
        lines = ["quarkus.http.auth.basic=true", "quarkus.security.users.embedded.plain-text=true",
                 "apicurio.auth.role-based-authorization=true"]
        for user, password, role in ((self.admin, self.admin_password, "sr-admin"), *self.registry_users):
            lines += [f"quarkus.security.users.embedded.users.{user}={password}",
                      f"quarkus.security.users.embedded.roles.{user}={role}"]
        return "".join(f"{line}\n" for line in lines)

    def registry_authorization(self) -> dict[str, str]:
        """The admin's HTTP basic-auth header for the registry (none when it needs no auth)."""
        if not self.registry_users:
            return {}
        token = b64encode(f"{self.admin}:{self.admin_password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


@dataclass(frozen=True)
class ClusterState:
    """What `state.json` records about a running cluster."""

    name: str
    bootstrap: str
    registry_url: str
    ports: Ports
    broker_pid: int
    registry_pid: int
    security_protocol: str = "PLAINTEXT"
    ca_file: str = ""
    """For SASL_SSL: the CA clients must trust."""

    def client(self) -> Connection:
        """How a client reaches this cluster's broker and registry (a secured one's credentials are a role's)."""
        return Connection(bootstrap=self.bootstrap, registry_url=self.registry_url)


def port_open(port: int) -> bool:
    """Whether something listens on this loopback port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _pid_runs_from(pid: int, root: Path) -> bool:
    """Whether `pid` is alive and is a JVM started from `root` (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(root).encode() in cmdline


def _jvms_from(root: Path) -> Iterator[int]:
    """Every live process whose command line names `root`: the sweep that prevents orphans."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
                if cmdline and cmdline[0].endswith(b"java") and str(root).encode() in b" ".join(cmdline):
                    yield int(proc.name)


def die_with_parent() -> None:
    """In the child before exec: own session, and SIGTERM when the parent dies."""
    os.setsid()
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, what: str,
                timeout: float) -> None:
    """Poll `ready` until it holds; fail fast, with the log's tail, if the JVM exits first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise StackError(f"{what} exited with {proc.returncode}; last lines of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready after {timeout:.0f} s; see {log}:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Cluster:
    """One broker and one registry rooted in a folder of their own.

    Args:
        name: a label, also the default folder name under `$PROMPT_STREAMS_HOME/stacks/`.
        ports: loopback ports; zeros are replaced by free ports when the cluster starts.
        root: the folder for data, logs and state; defaults to `$PROMPT_STREAMS_HOME/stacks/<name>`.
        bound_to_parent: the JVMs receive SIGTERM when the process that started them dies
            (pytest fixtures use this, so a killed test run leaves no JVM behind).
    """

    def __init__(self, name: str = "main", ports: Ports | None = None, root: Path | None = None,
                 *, bound_to_parent: bool = False, security: Security | None = None) -> None:
        self.name = name
        self.ports = ports or Ports()
        self.root = (root or LOCAL_DIR / "stacks" / name).resolve()
        self.bound_to_parent = bound_to_parent
        self.security = security
        self._state_file = self.root / "state.json"

    # -- queries -------------------------------------------------------------------------------
    def status(self) -> ClusterState | None:
        """The running cluster recorded in `state.json`, or None if it is not (fully) running."""
        try:
            raw = json.loads(self._state_file.read_text())
            state = ClusterState(**{**raw, "ports": Ports(**raw["ports"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        alive = all(_pid_runs_from(pid, self.root) for pid in (state.broker_pid, state.registry_pid))
        if alive and port_open(state.ports.broker) and port_open(state.ports.registry):
            return state
        return None

    # -- life ----------------------------------------------------------------------------------
    def up(self, timeout: float = 120.0) -> ClusterState:
        """Start the cluster, or return the one already running; both answer when this returns."""
        if running := self.status():
            return running
        self.down()  # a half-dead cluster: clear it before starting afresh
        if not KAFKA_LIB.is_dir() or not REGISTRY_JAR.is_file():
            raise StackError(f"no Kafka or registry jars in {LOCAL_DIR}: run `python -m stack fetch` "
                             "(`make setup` in a checkout)")
        ports = self.ports.resolved()
        for folder in ("kafka-data", "registry", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        properties = self._write_server_properties(ports)
        self._format_storage(properties)
        ca_file = str(make_tls(self.root / "tls").ca) if self.security else ""
        broker = self._start_broker(properties, ports, timeout)
        try:
            if self.security and self.security.acls:
                self._create_acls(f"127.0.0.1:{ports.broker}", ca_file, self.security.acls)
            registry = self._start_registry(ports, timeout)
        except BaseException:
            self._terminate([broker.pid])
            raise
        state = ClusterState(
            name=self.name,
            bootstrap=f"127.0.0.1:{ports.broker}",
            registry_url=f"http://127.0.0.1:{ports.registry}{CCOMPAT_PATH}",
            ports=ports,
            broker_pid=broker.pid,
            registry_pid=registry.pid,
            security_protocol="SASL_SSL" if self.security else "PLAINTEXT",
            ca_file=ca_file,
        )
        self._state_file.write_text(json.dumps(asdict(state), indent=2))
        return state

    def _create_acls(self, bootstrap: str, ca_file: str, acls: Iterable[AclBinding]) -> None:
        """Create the ACLs as the admin, waiting for each (one that exists is left as it is; none is removed).

        Raises:
            StackError: the broker refused or did not answer.
        """
        assert self.security is not None
        admin = AdminClient(self.security.admin_config(bootstrap, ca_file))
        try:
            for future in admin.create_acls(list(acls), request_timeout=30).values():
                future.result()
        except KafkaException as error:
            raise StackError(f"creating the ACLs failed: {error}; see {self.root / 'logs' / 'broker.log'}") from error

    def bounce_broker(self, pause: float = 2.0, timeout: float = 120.0) -> ClusterState:
        """Stop the broker (SIGTERM), wait `pause` seconds, start it again on the same ports and data.

        Raises:
            StackError: the cluster is not running, or the broker does not come back.
        """
        state = self.status()
        if state is None:
            raise StackError(f"{self.name} is not running")
        self._terminate([state.broker_pid])
        time.sleep(pause)
        broker = self._start_broker(self.root / "server.properties", state.ports, timeout)
        state = ClusterState(**{**asdict(state), "ports": state.ports, "broker_pid": broker.pid})
        self._state_file.write_text(json.dumps(asdict(state), indent=2))
        return state

    def down(self, timeout: float = 30.0) -> None:
        """Stop both JVMs (SIGTERM, then SIGKILL) and any other JVM still running from the folder."""
        pids = set(_jvms_from(self.root))
        self._terminate(sorted(pids), timeout)
        self._state_file.unlink(missing_ok=True)

    # -- steps ---------------------------------------------------------------------------------
    def _write_server_properties(self, ports: Ports) -> Path:
        """A single-node combined broker+controller with a static quorum, loopback only."""
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{ports.controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{ports.broker},CONTROLLER://127.0.0.1:{ports.controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{ports.broker}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.root / "kafka-data"),
            "num.partitions": "1",
            # Topics are created explicitly with their declared partitions; an auto-created
            # topic would silently get one partition and break co-partitioning.
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "8",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        if self.security:
            settings |= self._sasl_ssl(ports)
        if self.security and self.security.acls is not None:
            settings |= self._authorizer()
        path = self.root / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        path.chmod(0o600)  # it holds the broker's own SCRAM password
        return path

    def _sasl_ssl(self, ports: Ports) -> dict[str, str]:
        """Clients on SASL_SSL with SCRAM-SHA-512 only; the controller listener stays on loopback."""
        assert self.security is not None
        tls = make_tls(self.root / "tls")
        keystore = self.root / "tls" / "broker-keystore.pem"
        keystore.write_bytes(tls.key.read_bytes() + tls.certificate.read_bytes())
        keystore.chmod(0o600)
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{self.security.admin}" '
                f'password="{self.security.admin_password}";')
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{ports.broker},CONTROLLER://127.0.0.1:{ports.controller}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{ports.broker}",
            "inter.broker.listener.name": "SASL_SSL",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM", "ssl.keystore.location": str(keystore),
            "ssl.truststore.type": "PEM", "ssl.truststore.location": str(tls.ca),
            "ssl.endpoint.identification.algorithm": "https",
        }

    def _authorizer(self) -> dict[str, str]:
        """Deny what no ACL allows; the admin alone is a super user, on the controller listener too.

        The broker reaches the controller as a client: on a plaintext controller listener it would be
        User:ANONYMOUS, which would then have to be a super user, as would any local process dialling that port.
        SASL/PLAIN with the admin's password (the controller's one user) makes it User:admin instead.
        """
        assert self.security is not None
        admin, password = self.security.admin, self.security.admin_password
        return {
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": f"User:{admin}",
            "listener.security.protocol.map": "CONTROLLER:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.mechanism.controller.protocol": "PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
            "listener.name.controller.plain.sasl.jaas.config":
                f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{admin}" '
                f'password="{password}" user_{admin}="{password}";',
        }

    def _format_storage(self, properties: Path) -> None:
        """Format KRaft storage once; later starts reuse the data (and its cluster id)."""
        if (self.root / "kafka-data" / "meta.properties").exists():
            return
        tool = [str(find_java(17)), f"-Dlog4j2.configurationFile={STACK_DIR / 'log4j2-tools.properties'}",
                "-cp", f"{KAFKA_LIB}/*", "kafka.tools.StorageTool"]
        cluster_id = self._run([*tool, "random-uuid"]).strip()
        scram = []
        if self.security:  # SCRAM credentials go into the metadata log at format time
            for user, password in ((self.security.admin, self.security.admin_password), *self.security.users):
                scram += ["--add-scram", f'SCRAM-SHA-512=[name="{user}",password="{password}"]']
        self._run([*tool, "format", "-t", cluster_id, "-c", str(properties), "--ignore-formatted", *scram])

    @staticmethod
    def _run(command: list[str]) -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise StackError(f"{command[-4:]} failed ({done.returncode}):\n{done.stderr}")
        return done.stdout

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.root,
                preexec_fn=die_with_parent if self.bound_to_parent else os.setsid,
            )

    def _start_broker(self, properties: Path, ports: Ports, timeout: float) -> subprocess.Popen[bytes]:
        log = self.root / "logs" / "broker.log"
        log.write_bytes(b"")
        proc = self._spawn([
            str(find_java(17)), "-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={STACK_DIR / 'log4j2-broker.properties'}",
            f"-Dkafka.logs.dir={self.root / 'logs'}",
            "-cp", f"{KAFKA_LIB}/*", "kafka.Kafka", str(properties),
        ], log)

        def ready() -> bool:
            return port_open(ports.broker) and BROKER_READY_LINE in log.read_text(errors="replace")

        wait_until(ready, proc, log, "Kafka broker", timeout)
        return proc

    def _start_registry(self, ports: Ports, timeout: float) -> subprocess.Popen[bytes]:
        log = self.root / "logs" / "registry.log"
        log.write_bytes(b"")
        database = self.root / "registry" / "schemas"
        self._write_registry_users()
        proc = self._spawn([
            str(find_java(21)), "-Xmx512m",
            "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={ports.registry}",
            f"-Dapicurio.datasource.url=jdbc:h2:file:{database}",
            "-Dapicurio.datasource.jdbc.initial-size=2", "-Dapicurio.datasource.jdbc.min-size=2",
            # Health and metrics listen on a port of their own, by default 0.0.0.0:9000.
            "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={free_port()}",
            "-Dquarkus.log.level=WARN",
            "-jar", str(REGISTRY_JAR),
        ], log)
        url = f"http://127.0.0.1:{ports.registry}{CCOMPAT_PATH}/subjects"
        headers = self.security.registry_authorization() if self.security else {}
        wait_until(lambda: _http_ok(url, headers), proc, log, "schema registry", timeout)
        return proc

    def _write_registry_users(self) -> None:
        """Quarkus reads `config/application.properties` from the registry's working directory (the cluster's
        folder): the users go there, not on a command line every local user can read."""
        path = self.root / "config" / "application.properties"
        if not (self.security and self.security.registry_users):
            path.unlink(missing_ok=True)
            return
        path.parent.mkdir(exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(self.security.registry_properties())

    def _terminate(self, pids: list[int], timeout: float = 30.0) -> None:
        terminate(pids, lambda pid: _pid_runs_from(pid, self.root), timeout)


def terminate(pids: list[int], still_ours: Callable[[int], bool], timeout: float) -> None:
    """SIGTERM the processes, reap them, and SIGKILL those still running as ours after `timeout`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        for pid in alive:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        alive = [pid for pid in pids if still_ours(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def settings_env(state: ClusterState) -> dict[str, str]:
    """The environment variables that point Prompt Streams at this cluster (credentials aside)."""
    env = {"PROMPT_STREAMS_BOOTSTRAP": state.bootstrap, "PROMPT_STREAMS_REGISTRY_URL": state.registry_url}
    if state.security_protocol != "PLAINTEXT":
        env |= {"PROMPT_STREAMS_SECURITY_PROTOCOL": state.security_protocol,
                "PROMPT_STREAMS_SASL_MECHANISM": "SCRAM-SHA-512", "PROMPT_STREAMS_SSL_CAFILE": state.ca_file}
    return env



def stored_passwords(root: Path, users: Iterable[str]) -> dict[str, str]:
    """The cluster's passwords by user: generated on first use, kept in `credentials.json` (mode 0600).

    SCRAM users are created when the cluster's storage is formatted: a user added later needs a new folder.
    """
    path = root / "credentials.json"
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = {user: secrets.token_urlsafe(24) for user in users if user not in stored}
    if missing:
        root.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(stored | missing))
    return stored | missing


def credentials_env(root: Path, user: str) -> dict[str, str]:
    """One user's credentials as settings, for Kafka and for the registry, if the cluster has any.

    Raises:
        StackError: the cluster has credentials, but none for this user.
    """
    path = root / "credentials.json"
    if not path.exists():
        return {}
    stored = json.loads(path.read_text())
    if user not in stored:
        raise StackError(f"{path} has no user '{user}' (it has {', '.join(sorted(stored))}): a cluster made "
                         f"before roles existed; stop it and remove {root} to start afresh")
    return {"PROMPT_STREAMS_SASL_USERNAME": user, "PROMPT_STREAMS_SASL_PASSWORD": stored[user],
            "PROMPT_STREAMS_REGISTRY_USER": user, "PROMPT_STREAMS_REGISTRY_PASSWORD": stored[user]}
