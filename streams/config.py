"""Settings: the only place that reads the environment, once, into one frozen object.

Every setting is an environment variable `PROMPT_STREAMS_<NAME>` with a documented default;
`python -m streams.config` prints them all with their current values (secrets as `***`). A
`PROMPT_STREAMS_*` variable that is no setting is refused at start: a misspelt name would
otherwise leave its setting at the default without a word.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import socket
import sys
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple

from streams.core.arrivals import BUCKET
from streams.core.policy import Policy
from streams.errors import ConfigurationError

PREFIX = "PROMPT_STREAMS_"
PACKAGE_DIR = Path(__file__).resolve().parent
"""The package, installed or checked out: the default instrument, survey and OCPS files ship in it."""
UNDER_HOME = {"data_dir": "data", "data_root": "repo", "output_root": "outputs", "apdb_config": "apdb/apdb.yaml"}
"""The folders and files that default to a place under HOME."""
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
LOG_FORMATS = ("text", "json")


def default_home() -> Path:
    """Where a user's files go: $PROMPT_STREAMS_HOME of this process (also for settings made from another
    mapping: the home is the process's, as for the local stack), else $XDG_DATA_HOME/prompt-streams, that is
    ~/.local/share/prompt-streams (never next to the installed package)."""
    if home := os.environ.get(f"{PREFIX}HOME"):
        return Path(home)
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "prompt-streams"


class SettingsError(ConfigurationError):
    """An environment variable has a value the application cannot use."""


STORES = ("rocksdb://", "memory://")


def _setting(default: Any, doc: str, *, secret: bool = False, choices: tuple[str, ...] = (),
             minimum: float | None = None, maximum: float | None = None, positive: bool = False) -> Any:
    """A setting's default and documentation, and the values it may take (checked at start, all at once)."""
    return field(default=default, metadata={"doc": doc, "secret": secret, "choices": choices, "minimum": minimum,
                                            "maximum": maximum, "positive": positive})


def _problem(name: str, value: Any, metadata: Mapping[str, Any]) -> str | None:
    """What is wrong with the value of setting `name` (its variable's name), or None."""
    variable = f"{name}={value!r}"
    if metadata["choices"] and value not in metadata["choices"]:
        return f"{variable}: expected one of {', '.join(metadata['choices'])}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{variable}: not a finite number"
    if metadata["positive"] and not value > 0:
        return f"{variable}: must be more than 0"
    if metadata["minimum"] is not None and value < metadata["minimum"]:
        return f"{variable}: must be at least {metadata['minimum']:g}"
    if metadata["maximum"] is not None and value > metadata["maximum"]:
        return f"{variable}: must be at most {metadata['maximum']:g}"
    return None


@dataclass(frozen=True)
class Connection:
    """A Kafka cluster and its schema registry as a client reaches them, security included: the processing
    cluster (`PROMPT_STREAMS_BOOTSTRAP`, ...) and the Chile one the SAL bridge writes to
    (`PROMPT_STREAMS_CHILE_BOOTSTRAP`, ...) are two of these."""

    bootstrap: str = _setting("", "Kafka bootstrap servers, comma-separated host:port.")
    registry_url: str = _setting("", "Confluent-compatible schema registry URL.")
    registry_user: str = _setting("", "Schema registry basic-auth user (empty: no auth).")
    registry_password: str = _setting("", "Schema registry basic-auth password.", secret=True)
    registry_timeout: int = _setting(10, "Seconds a schema registry request may take before the client retries it "
                                     "(3 retries): a registry that accepts a connection but never answers must not "
                                     "hang a worker.", minimum=1)
    security_protocol: str = _setting("PLAINTEXT",
                                      f"Kafka security protocol: {', '.join(SECURITY_PROTOCOLS)}.",
                                      choices=SECURITY_PROTOCOLS)
    sasl_mechanism: str = _setting("SCRAM-SHA-512", f"SASL mechanism: {', '.join(SASL_MECHANISMS)}.",
                                   choices=SASL_MECHANISMS)
    sasl_username: str = _setting("", "SASL user name.")
    sasl_password: str = _setting("", "SASL password.", secret=True)
    ssl_cafile: str = _setting("", "CA certificate (PEM) that signed the brokers' certificates.")
    ssl_certfile: str = _setting("", "Client certificate (PEM) for mutual TLS, if the brokers ask.")
    ssl_keyfile: str = _setting("", "Client private key (PEM) for mutual TLS.")
    replication_factor: int = _setting(1, "Replication factor of the topics created on it.", minimum=1)

    def kafka_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) settings for this cluster, security included."""
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            config |= {"sasl.mechanism": self.sasl_mechanism, "sasl.username": self.sasl_username,
                       "sasl.password": self.sasl_password}
        if self.security_protocol.endswith("SSL"):
            tls = {"ssl.ca.location": self.ssl_cafile, "ssl.certificate.location": self.ssl_certfile,
                   "ssl.key.location": self.ssl_keyfile}
            config |= {key: value for key, value in tls.items() if value}
        return config

    def registry_config(self) -> dict[str, Any]:
        """Schema registry client settings."""
        config: dict[str, Any] = {"url": self.registry_url, "timeout": self.registry_timeout}
        if self.registry_user:
            config["basic.auth.user.info"] = f"{self.registry_user}:{self.registry_password}"
        if self.ssl_cafile and self.registry_url.startswith("https"):
            config["ssl.ca.location"] = self.ssl_cafile
        return config


@dataclass(frozen=True)
class Settings:
    """The configuration of a worker, a tool or a connector."""

    app_id: str = _setting("prompt-streams", "Faust application id: consumer group and table prefix.")
    cluster: Connection = field(  # a cluster's settings are read from PROMPT_STREAMS_<cluster prefix><NAME>
        default=Connection(bootstrap="127.0.0.1:9092", registry_url="http://127.0.0.1:8081/apis/ccompat/v7"),
        metadata={"cluster": "", "doc": ""})
    home: str = _setting("", "Where a user's files go unless set one by one: worker state (data/), the data "
                         "repository (repo/), pipeline outputs (outputs/) and the APDB's configuration "
                         "(apdb/apdb.yaml). Empty: $XDG_DATA_HOME/prompt-streams, that is "
                         "~/.local/share/prompt-streams; `make` sets it to the checkout's .local/.")
    data_dir: str = _setting("", "Worker state: RocksDB tables (one folder per worker); empty: HOME/data.")
    store: str = _setting("rocksdb://", "Faust table store: rocksdb:// (default) or memory://.", choices=STORES)
    web_port: int = _setting(6066, "Port of the worker's web server (views, health).", minimum=1, maximum=65535)
    web_bind: str = _setting("127.0.0.1", "Address the worker's web server listens on (0.0.0.0: every interface, "
                             "when workers on other hosts or Prometheus must reach it).")
    web_host: str = _setting("127.0.0.1", "Host name or address other workers reach this one at (its URL in "
                             "faust's routing: views forwarded to the worker that owns the data).")
    web_token: str = _setting("", "Bearer token the web endpoints that change anything require "
                              "(empty: such endpoints refuse every request).", secret=True)
    web_job_tokens: str = _setting("", "More bearer tokens of the OCPS job service, one per client, as "
                                   "name=token pairs, comma-separated: a job belongs to the name whose token "
                                   "created it (WEB_TOKEN's name is `operator`), and only that token or "
                                   "WEB_TOKEN may run, abort or delete it.", secret=True)
    web_read_token: str = _setting("", "Bearer token the JSON views and the OCPS job service's reads require "
                                   "(a write token also reads); empty: reads are open to whoever reaches the "
                                   "port. /health/, /ready/, /metrics and /dashboard/ stay open.", secret=True)
    topic_prefix: str = _setting("prompt", "Prefix of the project's own topics: <prefix>.<name>.")
    next_visit_topic: str = _setting("lsst.sal.ScriptQueue.logevent_nextVisit",
                                     "SAL nextVisit topic, consumed unchanged.")
    next_visit_canceled_topic: str = _setting("lsst.sal.ScriptQueue.logevent_nextVisitCanceled",
                                              "SAL nextVisitCanceled topic.")
    detector_partitions: int = _setting(16, "Partitions of per-detector topics (upper bound on workers).", minimum=1)
    standby_replicas: int = _setting(1, "Standby copies of each table partition kept warm by other workers, "
                                     "so a worker's death is taken over without a restore.", minimum=0)
    worker_name: str = _setting("", "Name of this worker in results, logs and its transactional id; "
                                "stable across restarts (default: host name and web port).")
    instruments_file: str = _setting(str(PACKAGE_DIR / "instruments.toml"),
                                     "Instruments and their (disabled) detectors, TOML.")
    surveys_file: str = _setting(str(PACKAGE_DIR / "surveys.toml"),
                                 "Survey patterns -> pipeline fallback lists, TOML.")
    ocps_triggers_file: str = _setting(str(PACKAGE_DIR / "ocps.toml"),
                                       "Events that create OCPS jobs by themselves (visit summary -> job), TOML.")
    ocps_job_retention: float = _setting(7 * 24 * 3600.0, "An OCPS job is forgotten this long after it ended (or, "
                                         "PENDING, after its last change): its row goes, and a tombstone takes it "
                                         "off the ocps-jobs topic and every worker's view [s].", positive=True)
    data_root: str = _setting("", "Root of the data repository: file:// URIs from events must lie under it; "
                              "empty: HOME/repo.")
    s3_endpoint_url: str = _setting("", "S3 endpoint for s3:// URIs (empty: AWS's default).")
    s3_access_key: str = _setting("", "S3 access key id (empty: boto3's usual sources).")
    s3_secret_key: str = _setting("", "S3 secret access key.", secret=True)
    sidecar_attempts: int = _setting(20, "Tries to read a raw's sidecar, 0.1 s apart (it may lag the raw).", minimum=1)
    raw_buckets: str = _setting("rubin-summit", "Buckets whose notifications the S3 connector acts on, "
                                "comma-separated: a creation in another bucket is a dead letter, and no request "
                                "is signed for it (empty: every creation is a dead letter).")
    s3_max_records: int = _setting(100, "Records of one S3 notification the connector handles (each may cost up "
                                   "to SIDECAR_ATTEMPTS reads); the rest are one dead letter together.", minimum=1)
    output_root: str = _setting("", "Where pipelines write their outputs (one folder per instrument/group/detector); "
                                "empty: HOME/outputs.")
    ccd_threads: int = _setting(1, "Threads one CCD's pipeline may use (ISR per amplifier, detection per band); "
                                "worth raising when cores outnumber the CCDs in flight.", minimum=1)
    preload_cache_items: int = _setting(16, "Calibrations and template tiles kept per pipeline process.", minimum=1)
    apdb_config: str = _setting("", "The Alert Production Database: a dax_apdb configuration file (apdb-cli "
                                "create-sql or create-cassandra writes one); empty: HOME/apdb/apdb.yaml, where a "
                                "worker (or `make setup`) creates an SQLite one if missing.")
    association_radius: float = _setting(1.0, "A DIA source joins the nearest DIA object within this radius [arcsec].",
                                         positive=True)
    max_dia_sources: int = _setting(2000, "DIA sources kept per CCD (the highest |S/N|): more means a satellite trail "
                                    "or a bad subtraction, and would flood the alert stream (at most 8192).",
                                    minimum=1, maximum=8192)
    alert_topic: str = _setting("lsst-alerts-v11", "Topic of the alert stream community brokers read (the real "
                                "stream's name for the alert schema in use).")
    apdb_retry_seconds: float = _setting(30.0, "How long a pipeline retries an APDB that does not answer before the "
                                         "CCD fails, retriable (nothing is stored twice: ids are deterministic) [s].",
                                         minimum=0)
    message_expiration: float = _setting(3600.0, "nextVisit older than this is dropped [s].", positive=True)
    image_timeout: float = _setting(120.0, "Wait for raws beyond 2 x duration (IMAGE_TIMEOUT) [s].", minimum=0)
    process_timeout: float = _setting(600.0, "After the image deadline, wait this long for results; also the longest "
                                             "a built-in pipeline task may run before its process is killed [s].",
                                             positive=True)
    retention: float = _setting(3600.0, "Keep finished visit state this long to drop stragglers [s].", positive=True)
    pipeline_processes: int = _setting(os.cpu_count() or 1, "Processes running pipelines in this worker.", minimum=1)
    pipeline_memory_limit: int = _setting(0, "Address space each pipeline process may map (RLIMIT_AS; its commands "
                                          "inherit it): a CCD that needs more fails alone instead of taking "
                                          "the host's memory. Virtual, not resident, memory: a built-in pipeline "
                                          "process maps about 700 MiB before its first CCD, so allow several GiB "
                                          "(0: no limit) [MiB].", minimum=0)
    standin_preload_seconds: float = _setting(0.05, "Cost of the stand-in pipeline's preload [s].", minimum=0)
    standin_run_seconds: float = _setting(0.2, "CPU cost of the stand-in pipeline's run [s].", minimum=0)
    standin_dia_sources: int = _setting(0, "DIA sources the stand-in pipeline finds per CCD, at the same places "
                                        "every visit of a pointing: they go through association, the APDB and the "
                                        "alert stream like real ones (0: none, no APDB and no alerts).",
                                        minimum=0, maximum=8192)
    log_format: str = _setting("text", "Worker log lines: text (for people) or json (one object per line, "
                               "labelled with instrument, group, detector and visit, for a log store).",
                               choices=LOG_FORMATS)
    log_forward_rate: float = _setting(1.0, "Worker log records at WARNING and above sent per second on "
                                       "average to the log-messages topic (the rest are counted, not sent).",
                                       positive=True)
    log_forward_burst: int = _setting(20, "Worker log records at WARNING and above sent at once before "
                                      "the rate applies.", minimum=1)
    # -- the Chile side of the SAL bridge (connectors/sal_bridge.py) ----------------------------
    chile: Connection = field(default=Connection(),
                              metadata={"cluster": "chile_", "doc": "Chile cluster, where the SAL bridge writes: "})
    chile_sal_subname: str = _setting("sal", "SAL topic sub-namespace: topics are lsst.<subname>.PromptProcessing.*"
                                      " (salobj's LSST_TOPIC_SUBNAME; its unit tests use test_*).")
    chile_sal_index: int = _setting(1, "salIndex of the PromptProcessing events this bridge writes.", minimum=0)
    chile_log_rate: float = _setting(1.0, "logMessage events the bridge sends per second on average (log time).",
                                     positive=True)
    chile_log_burst: int = _setting(20, "logMessage events the bridge sends at once before the rate applies.",
                                    minimum=1)
    sasquatch_environment: str = _setting("dev", "Sasquatch metrics go to lsst.prompt.<environment>.<metric> "
                                          "on the Chile cluster (empty: none are sent).")

    def __post_init__(self) -> None:
        home = Path(self.home) if self.home else default_home()
        object.__setattr__(self, "home", str(home))
        for name, below in UNDER_HOME.items():  # a frozen dataclass: its defaults derived once, here
            if not getattr(self, name):
                object.__setattr__(self, name, str(home / below))
        problems = [problem for variable, value in self._values()
                    if (problem := _problem(variable.name, value, variable.field.metadata)) is not None]
        if bad := sorted(name for name in self.raw_bucket_names() if not BUCKET.match(name)):
            problems.append(f"{PREFIX}RAW_BUCKETS={self.raw_buckets!r}: not S3 bucket names: {', '.join(bad)}")
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `PROMPT_STREAMS_*` variables; unset ones keep their defaults.

        Raises:
            SettingsError: a `PROMPT_STREAMS_*` variable that is no setting (each one named), or a value
                the setting cannot take.
        """
        environ = os.environ if environ is None else environ
        refuse_unknown_variables(environ)
        values: dict[str, Any] = {}
        clusters: dict[str, dict[str, Any]] = {}
        problems = []
        for variable, cluster, item, _ in variables():
            raw = environ.get(variable)
            if raw is None:
                continue
            kind = type(item.default)
            try:
                value = kind(raw) if kind in (int, float) else raw
            except ValueError:
                problems.append(f"{variable}={raw!r}: not a{'n' if kind is int else ''} "
                                f"{'integer' if kind is int else 'number'}")
                continue
            (clusters.setdefault(cluster, {}) if cluster else values)[item.name] = value
        if problems:
            raise SettingsError("; ".join(problems))
        defaults = {item.name: item.default for item in fields(cls) if isinstance(item.default, Connection)}
        for name, changes in clusters.items():
            values[name] = replace(defaults[name], **changes)
        return cls(**values)

    def _values(self) -> Iterator[tuple[Variable, Any]]:
        """Every setting's variable and value, a cluster's one by one."""
        for variable in variables():
            yield variable, getattr(getattr(self, variable.cluster) if variable.cluster else self, variable.field.name)

    def raw_bucket_names(self) -> frozenset[str]:
        """The buckets of `raw_buckets`, blanks dropped."""
        return frozenset(name.strip() for name in self.raw_buckets.split(",") if name.strip())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value, _ in self.describe())
        return f"Settings({shown})"

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value, doc) for every setting; secrets show as `***` when set."""
        rows = []
        for variable, value in self._values():
            shown = "***" if variable.field.metadata["secret"] and value else str(value)
            rows.append((variable.name, shown, variable.doc))
        return rows

    def secrets(self) -> list[str]:
        """The values of the secret settings that are set (the logs mask them wherever they appear), and each
        token of WEB_JOB_TOKENS apart: a client's token alone in a message is masked too."""
        values = [value for variable, value in self._values() if variable.field.metadata["secret"] and value]
        tokens = (pair.partition("=")[2].strip() for pair in self.web_job_tokens.split(","))
        return values + [token for token in tokens if token]

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables, to start a worker or tool with them."""
        return {variable.name: str(value) for variable, value in self._values()}

    # -- derived client settings ----------------------------------------------------------------
    def kafka_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) settings for the processing cluster."""
        return self.cluster.kafka_config()

    def registry_config(self) -> dict[str, Any]:
        """The processing cluster's schema registry client settings."""
        return self.cluster.registry_config()

    def on(self, cluster: Connection) -> Settings:
        """These settings with `cluster` as the one the clients reach."""
        return replace(self, cluster=cluster)

    def on_chile(self) -> Settings:
        """These settings on the Chile cluster, for the SAL bridge's side there.

        Raises:
            SettingsError: no Chile bootstrap or registry is configured.
        """
        if not self.chile.bootstrap or not self.chile.registry_url:
            raise SettingsError(f"the SAL bridge needs {PREFIX}CHILE_BOOTSTRAP and {PREFIX}CHILE_REGISTRY_URL")
        return self.on(self.chile)

    def topic(self, name: str) -> str:
        """The full name of one of the project's own topics."""
        return f"{self.topic_prefix}.{name}"

    @property
    def worker(self) -> str:
        """This worker's name: the configured one, or host name and web port (stable across restarts)."""
        return self.worker_name or f"{socket.gethostname()}-{self.web_port}"

    def policy(self) -> Policy:
        """The timing rules of the core."""
        return Policy(message_expiration=self.message_expiration, image_timeout=self.image_timeout,
                      process_timeout=self.process_timeout, retention=self.retention)

    def worker_dir(self) -> Path:
        """This application's table folder under the data directory."""
        return Path(self.data_dir) / self.app_id


class Variable(NamedTuple):
    """One setting's environment variable."""

    name: str
    cluster: str
    """The cluster field of Settings it belongs to, or ""."""
    field: Field[Any]
    doc: str


@functools.cache
def variables() -> tuple[Variable, ...]:
    """Every setting's variable, a cluster's one by one (worked out once: every Settings made checks them)."""
    found: list[Variable] = []
    for item in fields(Settings):
        if "cluster" in item.metadata:
            found.extend(Variable(PREFIX + (item.metadata["cluster"] + leaf.name).upper(), item.name, leaf,
                                  item.metadata["doc"] + leaf.metadata["doc"]) for leaf in fields(Connection))
        else:
            found.append(Variable(PREFIX + item.name.upper(), "", item, item.metadata["doc"]))
    return tuple(found)


def refuse_unknown_variables(environ: Mapping[str, str]) -> None:
    """Refuse every `PROMPT_STREAMS_*` variable that is no setting, each with the setting it is most like.

    Raises:
        SettingsError: naming all of them (never their values, which may be secrets).
    """
    known = [variable.name.removeprefix(PREFIX) for variable in variables()]
    unknown = sorted(name for name in environ if name.startswith(PREFIX) and name.removeprefix(PREFIX) not in known)
    if not unknown:
        return
    described = []
    for name in unknown:
        close = difflib.get_close_matches(name.removeprefix(PREFIX), known, n=1)
        described.append(f"{name} (did you mean {PREFIX}{close[0]}?)" if close else name)
    raise SettingsError(f"unknown setting{'s' if len(unknown) > 1 else ''}: {', '.join(described)}; every "
                        f"setting is listed in the README's Configuration section")


def main() -> int:
    """Print every setting, its value and what it is for."""
    for variable, value, doc in Settings.from_env().describe():
        print(f"{variable}={value}\n    {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
