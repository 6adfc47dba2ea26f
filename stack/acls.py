"""Who may do what on a `--secure` cluster: one SCRAM user per role, Kafka ACLs derived from the topology.

The broker runs KRaft's StandardAuthorizer and refuses whatever no ACL allows, so producing to a
topic is a right, not a given: a stolen summit password can announce visits but cannot start a
detector, certify a calibration, run an OCPS job or inject a metric into Chile. The ACLs are
computed from the declared topics and processors (`topology/`) for the settings `stack up` runs
with, never listed by hand:

- summit: writes the observatory's inputs (the topics of role `input`) and nothing else;
- workers: read every topic of the deployment, write what the worker processors declare as outputs
  (and the log messages), and own what is named after the application id (changelogs, consumer
  groups, transactional ids);
- bridge: on the processing cluster reads the SAL bridge's inputs; on the Chile cluster writes the
  SAL and Sasquatch topics (by their declared prefixes) and its own topics;
- operators: read everything, write what operator commands write (`send-next-visit`, `send-raw`,
  `simulate-night`), and own the names of replays, which must begin with `REPLAY_PREFIX`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from stack.cluster import Security
from streams.config import Settings
from streams.runtime import topic_reader
from streams.simulate import visits as driver
from topology.graph import ProcessorSpec, declare_graph
from topology.topics import Role, declare


class ClientRole(StrEnum):
    """A kind of client; each has a SCRAM user of that name (and the same registry user)."""

    SUMMIT = "summit"
    WORKERS = "workers"
    BRIDGE = "bridge"
    OPERATORS = "operators"


ADMIN = "admin"
"""The broker's own user: inter-broker and controller traffic, creating the ACLs; the only super user."""
REPLAY_PREFIX = "replay"
"""Replays (`faust -A streams.app replay NAME`) name their app id and topics after NAME: on a secure cluster,
operators may create and write only under names that begin with this."""
READER_GROUPS = (topic_reader.GROUP_PREFIX, driver.GROUP_PREFIX)
"""The throw-away consumer groups of the tools' readers: they read by assignment, but the coordinator is still
looked up for their group."""
REGISTRY_ROLES = {ClientRole.SUMMIT: "sr-developer", ClientRole.WORKERS: "sr-developer",
                  ClientRole.BRIDGE: "sr-readonly", ClientRole.OPERATORS: "sr-developer"}
"""Apicurio roles on the processing cluster's registry: the bridge only reads schemas there."""
CHILE_REGISTRY_ROLES = {ClientRole.BRIDGE: "sr-developer", ClientRole.OPERATORS: "sr-readonly"}
"""On the Chile cluster's registry the bridge registers the SAL and Sasquatch schemas; nobody else writes."""

READ = (AclOperation.READ, AclOperation.DESCRIBE)
WRITE = (AclOperation.WRITE, AclOperation.DESCRIBE)
OWN = (AclOperation.READ, AclOperation.WRITE, AclOperation.CREATE, AclOperation.DESCRIBE)
GROUP = (AclOperation.READ, AclOperation.DESCRIBE)


@dataclass(frozen=True)
class Grant:
    """Allow the role's user these operations on the resource called `name` (or, prefixed, beginning with it)."""

    role: ClientRole
    resource: ResourceType
    name: str
    operations: tuple[AclOperation, ...]
    prefixed: bool = False

    def bindings(self) -> list[AclBinding]:
        """Kafka's ACL bindings: one per operation, from any host."""
        pattern = ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL
        return [AclBinding(self.resource, self.name, pattern, f"User:{self.role}", "*", operation,
                           AclPermissionType.ALLOW) for operation in self.operations]


def topic(role: ClientRole, name: str, operations: tuple[AclOperation, ...], *, prefixed: bool = False) -> Grant:
    """A grant on a topic (or on the topics beginning with `name`)."""
    return Grant(role, ResourceType.TOPIC, name, operations, prefixed)


def groups(role: ClientRole, prefixes: Iterable[str]) -> list[Grant]:
    """Joining, committing and looking up the consumer groups beginning with each prefix."""
    return [Grant(role, ResourceType.GROUP, prefix, GROUP, True) for prefix in prefixes]


def owned(role: ClientRole, prefix: str) -> list[Grant]:
    """Everything named after an application id: topics, consumer groups and transactional ids."""
    return [topic(role, prefix, OWN, prefixed=True), *groups(role, [prefix]),
            Grant(role, ResourceType.TRANSACTIONAL_ID, prefix, WRITE, True)]


def processor_group(settings: Settings, spec: ProcessorSpec) -> str:
    """A processor's consumer group, also its transactional id when it commits a checkpoint (`ProcessorSpec.name`)."""
    return f"{settings.app_id}-{spec.name}"


def summit_grants(settings: Settings) -> list[Grant]:
    """The observatory writes its inputs: nextVisit, nextVisitCanceled, raw arrivals, bucket notifications."""
    return [topic(ClientRole.SUMMIT, spec.name, WRITE) for spec in declare(settings).all() if spec.role is Role.INPUT]


def worker_grants(settings: Settings) -> list[Grant]:
    """Workers create and read every topic, write their processors' outputs, and own the app id's names.

    Idempotent and transactional producers need no IdempotentWrite on the cluster since Kafka 3.0 (KIP-679):
    writing to a topic is enough.
    """
    topics = declare(settings)
    graph = declare_graph(settings)
    written = {spec.name for processor in graph.all() if processor.process == "worker"
               for spec in (*processor.outputs, *processor.side_outputs)}
    written.add(topics.log_messages.name)  # the log forwarder of every worker (streams.observability.log_forwarding)
    role = ClientRole.WORKERS
    return [*(topic(role, spec.name, OWN if spec.name in written else (*READ, AclOperation.CREATE))
              for spec in topics.all()),
            *owned(role, settings.app_id), *groups(role, [topic_reader.JOB_VIEW_GROUP_PREFIX])]


def bridge_grants(settings: Settings) -> list[Grant]:
    """On the processing cluster the bridge only reads its inputs (its checkpoint lives in Chile)."""
    spec = declare_graph(settings).sal_bridge
    role = ClientRole.BRIDGE
    return [*(topic(role, source.name, READ) for source in spec.inputs),
            *groups(role, [processor_group(settings, spec)])]


def operator_grants(settings: Settings) -> list[Grant]:
    """Operators read every topic, send nextVisits and raws by hand, and run replays under `REPLAY_PREFIX`."""
    topics = declare(settings)
    role = ClientRole.OPERATORS
    return [topic(role, "*", READ), *(topic(role, spec.name, WRITE) for spec in (topics.next_visit,
                                                                                   topics.raw_image_available)),
            *owned(role, REPLAY_PREFIX), *groups(role, [*READER_GROUPS, topic_reader.JOB_VIEW_GROUP_PREFIX])]


def chile_grants(settings: Settings) -> list[Grant]:
    """The Chile side: the bridge writes the SAL and Sasquatch topics and its own; operators read."""
    spec = declare_graph(settings).sal_bridge
    group = processor_group(settings, spec)
    bridge, operators = ClientRole.BRIDGE, ClientRole.OPERATORS
    create = (*WRITE, AclOperation.CREATE)
    return [*(topic(bridge, prefix, create, prefixed=True) for prefix in spec.output_prefixes),
            *(topic(bridge, own.name, OWN) for own in spec.outputs),
            *groups(bridge, [group]),  # its checkpoint reader's `<group>-restore`
            Grant(bridge, ResourceType.TRANSACTIONAL_ID, group, WRITE),
            topic(operators, "*", READ), *groups(operators, READER_GROUPS)]


def role_grants(settings: Settings, *, chile: bool = False) -> list[Grant]:
    """Every role's grants on a processing cluster, or on a Chile cluster."""
    if chile:
        return chile_grants(settings)
    return [*summit_grants(settings), *worker_grants(settings), *bridge_grants(settings), *operator_grants(settings)]


def bindings(grants: Iterable[Grant]) -> tuple[AclBinding, ...]:
    """The ACL bindings of all the grants."""
    return tuple(binding for grant in grants for binding in grant.bindings())


def role_security(passwords: Mapping[str, str], acls: Iterable[AclBinding], *, chile: bool = False) -> Security:
    """SASL_SSL with a SCRAM user per role, these ACLs (deny by default) and the registry behind basic auth.

    Args:
        passwords: the admin's (`ADMIN`) and each role's password, by user name.
        acls: the bindings to create at start (`bindings(role_grants(...))`).
        chile: a Chile cluster: the registry roles of that side.
    """
    registry = CHILE_REGISTRY_ROLES if chile else REGISTRY_ROLES
    users = tuple((str(role), passwords[role]) for role in ClientRole)
    return Security(passwords[ADMIN], users, ADMIN, acls=tuple(acls),
                    registry_users=tuple((user, password, registry.get(ClientRole(user), "sr-readonly"))
                                         for user, password in users))
