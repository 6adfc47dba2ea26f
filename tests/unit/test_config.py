"""Settings from the environment: defaults, parsing, validation, masked secrets."""

from __future__ import annotations

import threading
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from streams.config import Connection, Settings, SettingsError
from streams.secrets import scrub
from streams.serde.registry import ConfluentRegistry


def test_defaults_point_at_the_local_stack() -> None:
    """With nothing set, a worker talks to the local stack's broker and registry."""
    settings = Settings.from_env({})
    assert settings.cluster.bootstrap == "127.0.0.1:9092"
    assert settings.cluster.registry_url == "http://127.0.0.1:8081/apis/ccompat/v7"
    assert settings.next_visit_topic == "lsst.sal.ScriptQueue.logevent_nextVisit"
    assert settings.topic("ccd-result") == "prompt.ccd-result"
    assert settings.store == "rocksdb://"


def test_environment_overrides_and_integers_are_parsed() -> None:
    """PROMPT_STREAMS_* variables override defaults, with integer settings converted."""
    settings = Settings.from_env({"PROMPT_STREAMS_DETECTOR_PARTITIONS": "32",
                                  "PROMPT_STREAMS_TOPIC_PREFIX": "replay1.prompt"})
    assert settings.detector_partitions == 32
    assert settings.topic("visit-summary") == "replay1.prompt.visit-summary"


@pytest.mark.parametrize("environ", [
    {"PROMPT_STREAMS_DETECTOR_PARTITIONS": "many"},
    {"PROMPT_STREAMS_DETECTOR_PARTITIONS": "0"},
    {"PROMPT_STREAMS_SECURITY_PROTOCOL": "TLS"},
    {"PROMPT_STREAMS_SASL_MECHANISM": "GSSAPI"},
])
def test_unusable_values_are_refused_by_name(environ: dict[str, str]) -> None:
    """A bad value fails at start-up with the variable's name, not later in a client."""
    with pytest.raises(SettingsError, match=r"PROMPT_STREAMS_|at least 1"):
        Settings.from_env(environ)


def test_every_bad_value_is_named_in_one_message() -> None:
    """Three bad values at once: each is named with what it must be, so one restart fixes them all."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PROMPT_STREAMS_WEB_PORT": "70000", "PROMPT_STREAMS_LOG_FORMAT": "xml",
                           "PROMPT_STREAMS_ASSOCIATION_RADIUS": "nan"})
    message = str(refused.value)
    assert "PROMPT_STREAMS_WEB_PORT=70000: must be at most 65535" in message
    assert "PROMPT_STREAMS_LOG_FORMAT='xml': expected one of text, json" in message
    assert "PROMPT_STREAMS_ASSOCIATION_RADIUS=nan: not a finite number" in message
    with pytest.raises(SettingsError, match=r"RETENTION='1h': not a number; .*PROCESSES='two': not an integer"):
        Settings.from_env({"PROMPT_STREAMS_PIPELINE_PROCESSES": "two", "PROMPT_STREAMS_RETENTION": "1h"})


def test_secrets_are_masked_when_shown() -> None:
    """Passwords never appear in repr or in the printed settings."""
    settings = Settings.from_env({"PROMPT_STREAMS_SASL_PASSWORD": "hunter2",
                                  "PROMPT_STREAMS_REGISTRY_PASSWORD": "s3cret"})
    assert "hunter2" not in repr(settings) and "s3cret" not in repr(settings)
    assert ("PROMPT_STREAMS_SASL_PASSWORD", "***") in [(v, s) for v, s, _ in settings.describe()]


def test_each_job_token_is_a_secret_of_its_own() -> None:
    """A client's token from WEB_JOB_TOKENS is masked where it appears alone, not only as the whole setting."""
    settings = Settings.from_env({"PROMPT_STREAMS_WEB_JOB_TOKENS": "ops=tok-ops-1, night-crew = tok-crew-2"})
    text = scrub("pipeline said: Authorization: Bearer tok-crew-2 (also tok-ops-1)", settings.secrets())
    assert "tok-crew-2" not in text and "tok-ops-1" not in text and "night-crew" not in settings.secrets()


def test_sasl_ssl_settings_reach_the_kafka_client() -> None:
    """SASL_SSL with SCRAM becomes the librdkafka settings a client needs."""
    settings = Settings.from_env({"PROMPT_STREAMS_SECURITY_PROTOCOL": "SASL_SSL",
                                  "PROMPT_STREAMS_SASL_USERNAME": "prompt",
                                  "PROMPT_STREAMS_SASL_PASSWORD": "pw",
                                  "PROMPT_STREAMS_SSL_CAFILE": "/etc/ca.pem"})
    assert settings.kafka_config() == {
        "bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "prompt", "sasl.password": "pw",
        "ssl.ca.location": "/etc/ca.pem",
    }


def test_chile_settings_are_a_cluster_of_their_own() -> None:
    """The bridge's Chile connection has its own SASL_SSL credentials, masked when shown."""
    settings = Settings.from_env({"PROMPT_STREAMS_CHILE_BOOTSTRAP": "summit:9094",
                                  "PROMPT_STREAMS_CHILE_REGISTRY_URL": "https://summit/schema-registry",
                                  "PROMPT_STREAMS_CHILE_SECURITY_PROTOCOL": "SASL_SSL",
                                  "PROMPT_STREAMS_CHILE_SASL_USERNAME": "prompt-processing",
                                  "PROMPT_STREAMS_CHILE_SASL_PASSWORD": "summit-secret",
                                  "PROMPT_STREAMS_CHILE_SSL_CAFILE": "/etc/summit-ca.pem"})
    assert settings.kafka_config() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "PLAINTEXT"}
    assert settings.on_chile().kafka_config() == {
        "bootstrap.servers": "summit:9094", "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "prompt-processing", "sasl.password": "summit-secret", "ssl.ca.location": "/etc/summit-ca.pem",
    }
    assert settings.on_chile().registry_config() == {"url": "https://summit/schema-registry", "timeout": 10,
                                                  "ssl.ca.location": "/etc/summit-ca.pem"}
    assert "summit-secret" not in repr(settings) and "summit-secret" not in repr(settings.on_chile())


def test_both_clusters_are_one_type_each_field_a_variable_of_its_own() -> None:
    """The processing and Chile clusters share one connection type: every field of it is a variable for each, and
    a bad value is named by its own variable."""
    names = {variable for variable, _, _ in Settings().describe()}
    for item in fields(Connection):
        assert {f"PROMPT_STREAMS_{item.name.upper()}", f"PROMPT_STREAMS_CHILE_{item.name.upper()}"} <= names
    settings = Settings.from_env({"PROMPT_STREAMS_CHILE_REPLICATION_FACTOR": "3",
                                  "PROMPT_STREAMS_REPLICATION_FACTOR": "2"})
    assert (settings.cluster.replication_factor, settings.chile.replication_factor) == (2, 3)
    assert settings.cluster.bootstrap == "127.0.0.1:9092" and settings.chile.bootstrap == ""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PROMPT_STREAMS_CHILE_REPLICATION_FACTOR": "0", "PROMPT_STREAMS_SECURITY_PROTOCOL": "TLS"})
    assert "PROMPT_STREAMS_CHILE_REPLICATION_FACTOR=0: must be at least 1" in str(refused.value)
    assert "PROMPT_STREAMS_SECURITY_PROTOCOL='TLS': expected one of" in str(refused.value)


@pytest.mark.parametrize("environ", [{}, {"PROMPT_STREAMS_CHILE_BOOTSTRAP": "summit:9094"},
                                     {"PROMPT_STREAMS_CHILE_SECURITY_PROTOCOL": "TLS"}])
def test_the_bridge_refuses_incomplete_or_bad_chile_settings(environ: dict[str, str]) -> None:
    """No Chile bootstrap or registry, or a bad protocol: a clear error naming the variable."""
    with pytest.raises(SettingsError, match="PROMPT_STREAMS_CHILE_"):
        Settings.from_env(environ).on_chile()


def test_unknown_variables_are_refused_each_named_with_a_hint() -> None:
    """A misspelt PROMPT_STREAMS_* variable would leave its setting at the default unnoticed: every one is named,
    with the setting it most resembles, and never its value (it may be a secret)."""
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"PROMPT_STREAMS_BOOTSTRAP_SERVERS": "kafka:9092", "PROMPT_STREAMS_RAW_BUCKET": "raws",
                           "PROMPT_STREAMS_ZZZ": "hunter2", "PROMPT_STREAMS_TOPIC_PREFIX": "ok", "OTHER_VAR": "x"})
    message = str(refused.value)
    assert "PROMPT_STREAMS_BOOTSTRAP_SERVERS (did you mean PROMPT_STREAMS_BOOTSTRAP?)" in message
    assert "PROMPT_STREAMS_RAW_BUCKET (did you mean PROMPT_STREAMS_RAW_BUCKETS?)" in message
    assert "PROMPT_STREAMS_ZZZ;" in message and "PROMPT_STREAMS_ZZZ (" not in message
    assert "TOPIC_PREFIX" not in message and "OTHER_VAR" not in message
    assert "hunter2" not in message and "kafka:9092" not in message


def test_every_setting_is_a_known_variable() -> None:
    """The check refuses nothing the settings themselves would write (to_env starts workers and tools)."""
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_raw_buckets_are_a_comma_separated_list_of_bucket_names() -> None:
    """The S3 connector reads the project's raw bucket by default; a list is split and trimmed; a name S3 would not
    allow is refused at start, as is a cap on records below 1."""
    assert Settings.from_env({}).raw_bucket_names() == frozenset({"rubin-summit"})
    assert Settings.from_env({"PROMPT_STREAMS_RAW_BUCKETS": " rubin-summit, embargo-raws ,"}).raw_bucket_names() \
        == frozenset({"rubin-summit", "embargo-raws"})
    assert Settings.from_env({"PROMPT_STREAMS_RAW_BUCKETS": ""}).raw_bucket_names() == frozenset()
    with pytest.raises(SettingsError, match=r"PROMPT_STREAMS_RAW_BUCKETS=.*Bad_Bucket"):
        Settings.from_env({"PROMPT_STREAMS_RAW_BUCKETS": "rubin-summit,Bad_Bucket"})
    assert Settings.from_env({"PROMPT_STREAMS_S3_MAX_RECORDS": "7"}).s3_max_records == 7
    with pytest.raises(SettingsError, match="PROMPT_STREAMS_S3_MAX_RECORDS"):
        Settings.from_env({"PROMPT_STREAMS_S3_MAX_RECORDS": "0"})


class _Subjects(BaseHTTPRequestHandler):
    """A registry that lists no subjects and remembers each request's Authorization header."""

    seen: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        _Subjects.seen.append(self.headers.get("Authorization"))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def registry_url() -> Iterator[str]:
    """A local HTTP server standing in for the registry's Confluent API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Subjects)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Subjects.seen.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_registry_credentials_are_sent_as_basic_auth(registry_url: str) -> None:
    """A registry behind basic auth: the user and password reach it in each request, for the processing
    cluster's registry and for Chile's; without a user, no Authorization header is sent; the password is masked."""
    settings = Settings.from_env({"PROMPT_STREAMS_REGISTRY_URL": registry_url,
                                  "PROMPT_STREAMS_REGISTRY_USER": "workers",
                                  "PROMPT_STREAMS_REGISTRY_PASSWORD": "w-secret",
                                  "PROMPT_STREAMS_CHILE_BOOTSTRAP": "chile:9092",
                                  "PROMPT_STREAMS_CHILE_REGISTRY_URL": registry_url,
                                  "PROMPT_STREAMS_CHILE_REGISTRY_USER": "bridge",
                                  "PROMPT_STREAMS_CHILE_REGISTRY_PASSWORD": "b-secret"})
    assert ConfluentRegistry(settings.registry_config()).subjects() == []
    assert ConfluentRegistry(settings.on_chile().registry_config()).subjects() == []
    assert ConfluentRegistry(Settings.from_env({"PROMPT_STREAMS_REGISTRY_URL": registry_url}).registry_config()) \
        .subjects() == []
    assert _Subjects.seen == [f"Basic {b64encode(b'workers:w-secret').decode()}",
                              f"Basic {b64encode(b'bridge:b-secret').decode()}", None]
    assert "w-secret" not in repr(settings) and "b-secret" not in repr(settings)
