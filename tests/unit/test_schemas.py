"""The schemas: documented, SAL-exact where they mirror SAL, compatible with their history."""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType
from avro.schema import parse as avro_parse

from streams.serde import schemagen
from streams.serde.schemas import SCHEMA_DIR, load_schema, schema_names

SAL_PRIVATE = ["salIndex", "private_sndStamp", "private_rcvStamp", "private_efdStamp",
               "private_kafkaStamp", "private_seqNum", "private_revCode", "private_identity",
               "private_origin"]
NEXT_VISIT_ITEMS = [
    ("scriptSalIndex", "int"), ("groupId", "string"), ("coordinateSystem", "int"),
    ("position", {"type": "array", "items": "double"}), ("startTime", "double"),
    ("rotationSystem", "int"), ("cameraAngle", "double"), ("filters", "string"), ("dome", "int"),
    ("duration", "double"), ("nimages", "int"), ("instrument", "string"), ("survey", "string"),
    ("totalCheckpoints", "int"),
]


@pytest.mark.parametrize("name", schema_names())
def test_every_record_and_field_is_documented(name: str) -> None:
    """A reader of the topic finds a doc on the record and on each field."""
    schema = load_schema(name)
    assert schema.get("doc"), name
    undocumented = [item["name"] for item in schema["fields"] if not item.get("doc")]
    assert not undocumented, f"{name}: fields without doc: {undocumented}"


def test_next_visit_is_the_sal_layout() -> None:
    """Record name, namespace, field order and Avro types are those of ts_xml's nextVisit."""
    schema = load_schema("next_visit")
    assert (schema["namespace"], schema["name"]) == ("lsst.sal.ScriptQueue", "logevent_nextVisit")
    assert [item["name"] for item in schema["fields"]] == SAL_PRIVATE + [n for n, _ in NEXT_VISIT_ITEMS]
    types = {item["name"]: item["type"] for item in schema["fields"]}
    assert all(types[name] == avro for name, avro in NEXT_VISIT_ITEMS)
    assert types["private_sndStamp"] == "double" and types["private_seqNum"] == "int"
    assert all("description" in item and "units" in item for item in schema["fields"])
    assert next(i for i in schema["fields"] if i["name"] == "position")["default"] == [0.0, 0.0]


def test_next_visit_canceled_is_the_sal_layout() -> None:
    """nextVisitCanceled: the private fields, then scriptSalIndex and groupId."""
    schema = load_schema("next_visit_canceled")
    assert (schema["namespace"], schema["name"]) == ("lsst.sal.ScriptQueue", "logevent_nextVisitCanceled")
    assert [item["name"] for item in schema["fields"]] == [*SAL_PRIVATE, "scriptSalIndex", "groupId"]


def test_generated_records_match_the_schemas() -> None:
    """streams/serde/records.py is what the generator makes from schemas/ today."""
    assert schemagen.TARGET.read_text() == schemagen.render(), "run: python -m streams.serde.schemagen"


def compatible(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Whether data written with `writer` can be read with `reader` (the avro package's checker)."""
    result = ReaderWriterCompatibilityChecker().get_compatibility(
        avro_parse(json.dumps(reader)), avro_parse(json.dumps(writer)))
    return bool(result.compatibility is SchemaCompatibilityType.compatible)


def git_versions(path: Path) -> list[dict[str, Any]]:
    """Every committed version of a schema file, oldest first, then the working copy."""
    repo = SCHEMA_DIR.parent
    commits = subprocess.run(["git", "log", "--format=%H", "--reverse", "--", str(path)], cwd=repo,
                             capture_output=True, text=True, check=True).stdout.split()
    versions = [json.loads(subprocess.run(["git", "show", f"{c}:schemas/{path.name}"], cwd=repo,
                                          capture_output=True, text=True, check=True).stdout)
                for c in commits]
    return [*versions, json.loads(path.read_text())]


@pytest.mark.parametrize("name", schema_names())
def test_each_schema_change_is_backward_and_forward_compatible(name: str) -> None:
    """Topics outlive code: every version reads its predecessor's data and the other way round."""
    versions = git_versions(SCHEMA_DIR / f"{name}.avsc")
    for old, new in itertools.pairwise(versions):
        assert compatible(new, old), f"{name}: new schema cannot read old data (backward)"
        assert compatible(old, new), f"{name}: old schema cannot read new data (forward)"


def test_the_compatibility_check_catches_breaking_changes() -> None:
    """Adding a field without a default breaks backward compatibility; removing one, forward."""
    base = load_schema("raw_image_available")
    added = json.loads(json.dumps(base))
    added["fields"].append({"name": "new_required", "type": "int", "doc": "x"})
    assert not compatible(added, base)
    removed = json.loads(json.dumps(base))
    removed["fields"] = [f for f in removed["fields"] if f["name"] != "uri"]
    assert not compatible(base, removed)
