"""The secure stack's roles, without Kafka: what each role's ACLs allow, derived from the topology."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, ResourceType  # type: ignore[attr-defined]

from stack.acls import ClientRole, Grant, bindings, chile_grants, processor_group, role_grants, role_security
from stack.cluster import StackError, credentials_env, stored_passwords
from streams.config import Settings
from streams.ops.replay_plan import replay_settings
from topology.graph import declare_graph
from topology.tables import changelogs
from topology.topics import declare

SETTINGS = Settings.from_env({})
GRANTS = role_grants(SETTINGS)
TOPICS = declare(SETTINGS)
EVERY_TOPIC = [spec.name for spec in [*TOPICS.all(), *changelogs(SETTINGS)]]
READ, WRITE, CREATE = AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE


def allows(grants: list[Grant], role: ClientRole, name: str, operation: AclOperation,
           resource: ResourceType = ResourceType.TOPIC) -> bool:
    """Whether Kafka's authorizer would allow it: some grant of the role names the resource (or a prefix of it)."""
    return any(grant.role is role and grant.resource == resource and operation in grant.operations
               and (name.startswith(grant.name) if grant.prefixed else grant.name in (name, "*"))
               for grant in grants)


def writers(name: str, grants: list[Grant] = GRANTS) -> set[ClientRole]:
    """The roles that may produce to this topic."""
    return {role for role in ClientRole if allows(grants, role, name, WRITE)}


def test_the_summit_writes_the_observatory_inputs_and_nothing_else() -> None:
    """A summit password announces visits and raws; it starts no detector and reads nothing."""
    inputs = {TOPICS.next_visit.name, TOPICS.next_visit_canceled.name, TOPICS.raw_image_available.name,
              TOPICS.s3_notifications.name}
    assert {name for name in EVERY_TOPIC if ClientRole.SUMMIT in writers(name)} == inputs
    assert not any(allows(GRANTS, ClientRole.SUMMIT, name, READ) for name in EVERY_TOPIC)
    assert not [grant for grant in GRANTS if grant.role is ClientRole.SUMMIT and grant.resource != ResourceType.TOPIC]


@pytest.mark.parametrize("topic", ["detector_commands", "ocps_job_events", "metrics", "calibration_products",
                                   "visit_summary", "dead_letter"])
def test_commands_jobs_metrics_and_calibrations_are_written_by_workers_alone(topic: str) -> None:
    """What runs a job, certifies a master calibration or reaches Chile as a SAL event comes from a worker."""
    assert writers(getattr(TOPICS, topic).name) == {ClientRole.WORKERS}


def test_workers_may_do_what_their_processors_declare() -> None:
    """Every output and changelog, every processor's group and transactional id; every declared topic created."""
    workers = ClientRole.WORKERS
    for processor in declare_graph(SETTINGS).all():
        if processor.process != "worker":
            continue
        group = processor_group(SETTINGS, processor)
        assert all(allows(GRANTS, workers, spec.name, WRITE) for spec in (*processor.outputs, *processor.side_outputs))
        assert all(allows(GRANTS, workers, spec.name, READ) for spec in processor.inputs)
        assert allows(GRANTS, workers, group, READ, ResourceType.GROUP)
        assert allows(GRANTS, workers, f"{group}-worker-7", WRITE, ResourceType.TRANSACTIONAL_ID)
    assert all(allows(GRANTS, workers, name, CREATE) for name in EVERY_TOPIC)
    assert all(allows(GRANTS, workers, spec.name, WRITE) for spec in changelogs(SETTINGS))


def test_the_bridge_reads_its_inputs_here_and_writes_only_its_own_topics_in_chile() -> None:
    """On the processing cluster it writes nothing; in Chile, the SAL and Sasquatch topics and its checkpoint."""
    bridge = declare_graph(SETTINGS).sal_bridge
    assert all(allows(GRANTS, ClientRole.BRIDGE, spec.name, READ) for spec in bridge.inputs)
    assert not any(allows(GRANTS, ClientRole.BRIDGE, name, WRITE) for name in EVERY_TOPIC)
    chile = chile_grants(SETTINGS)
    for name in ("lsst.sal.PromptProcessing.logevent_metric", "lsst.prompt.dev.cpu_time",
                 *(spec.name for spec in bridge.outputs)):
        assert writers(name, chile) == {ClientRole.BRIDGE}
    assert writers("lsst.sal.ATPtg.logevent_target", chile) == set()
    group = processor_group(SETTINGS, bridge)
    assert allows(chile, ClientRole.BRIDGE, group, WRITE, ResourceType.TRANSACTIONAL_ID)
    assert allows(chile, ClientRole.BRIDGE, f"{group}-restore", READ, ResourceType.GROUP)


def test_operators_read_everything_and_write_what_their_commands_write() -> None:
    """send-next-visit and send-raw write their inputs; a replay writes only its own names."""
    operators = ClientRole.OPERATORS
    assert all(allows(GRANTS, operators, name, READ) for name in EVERY_TOPIC)
    assert {name for name in EVERY_TOPIC if operators in writers(name)} == {TOPICS.next_visit.name,
                                                                              TOPICS.raw_image_available.name}
    replay = replay_settings(SETTINGS, "replay-2026-11-30")
    for name in (spec.name for spec in [*declare(replay).all(), *changelogs(replay)]):
        assert allows(GRANTS, operators, name, WRITE) and allows(GRANTS, operators, name, CREATE)
    assert allows(GRANTS, operators, f"{replay.app_id}-gather", READ, ResourceType.GROUP)
    assert allows(GRANTS, operators, f"{replay.app_id}-gather-w1", WRITE, ResourceType.TRANSACTIONAL_ID)
    elsewhere = replay_settings(SETTINGS, "night-1")
    assert not allows(GRANTS, operators, declare(elsewhere).next_visit.name, WRITE)


def test_grants_follow_the_settings() -> None:
    """Another topic prefix and app id: the ACLs name those, not the defaults."""
    other = Settings.from_env({"PROMPT_STREAMS_TOPIC_PREFIX": "night", "PROMPT_STREAMS_APP_ID": "pp-prod"})
    grants = role_grants(other)
    assert writers("night.detector-commands", grants) == {ClientRole.WORKERS}
    assert writers("prompt.detector-commands", grants) == set()
    assert allows(grants, ClientRole.WORKERS, "pp-prod-gather", READ, ResourceType.GROUP)


def test_each_role_is_a_user_of_its_own_and_the_registry_needs_basic_auth() -> None:
    """One SCRAM user per role; the registry knows the same users, the bridge read-only on this side."""
    passwords = {"admin": "a", "summit": "s", "workers": "w", "bridge": "b", "operators": "o"}
    security = role_security(passwords, bindings(GRANTS))
    assert dict(security.users) == {role: passwords[role] for role in ClientRole}
    assert security.acls and {binding.principal for binding in security.acls} == {f"User:{r}" for r in ClientRole}
    assert {user: role for user, _, role in security.registry_users}["bridge"] == "sr-readonly"
    properties = security.registry_properties()
    assert "quarkus.http.auth.basic=true" in properties
    assert "quarkus.security.users.embedded.users.workers=w" in properties
    assert security.registry_authorization() == {"Authorization": "Basic YWRtaW46YQ=="}
    chile = role_security(passwords, (), chile=True)
    assert {user: role for user, _, role in chile.registry_users}["bridge"] == "sr-developer"


def test_passwords_are_kept_private_and_each_role_gets_its_environment(tmp_path: Path) -> None:
    """Generated once, mode 0600; `stack env --role R` prints R's Kafka and registry credentials."""
    first = stored_passwords(tmp_path, ["admin", *ClientRole])
    assert stored_passwords(tmp_path, ["admin", *ClientRole]) == first
    assert stat.S_IMODE((tmp_path / "credentials.json").stat().st_mode) == 0o600
    env = credentials_env(tmp_path, ClientRole.OPERATORS)
    assert env == {"PROMPT_STREAMS_SASL_USERNAME": "operators", "PROMPT_STREAMS_SASL_PASSWORD": first["operators"],
                   "PROMPT_STREAMS_REGISTRY_USER": "operators",
                   "PROMPT_STREAMS_REGISTRY_PASSWORD": first["operators"]}
    assert Settings.from_env(env).registry_config()["basic.auth.user.info"] == f"operators:{first['operators']}"
    assert credentials_env(tmp_path / "plain", ClientRole.WORKERS) == {}


def test_a_cluster_made_before_roles_is_named_not_misread(tmp_path: Path) -> None:
    """Its credentials file has the old single user: asking for a role says what to do."""
    (tmp_path / "credentials.json").write_text(json.dumps({"admin": "a", "prompt": "p"}))
    with pytest.raises(StackError, match="no user 'workers'"):
        credentials_env(tmp_path, ClientRole.WORKERS)
