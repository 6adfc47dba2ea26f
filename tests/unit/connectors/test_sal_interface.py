"""The PromptProcessing interface: shipped ts_xml files are current, and equal ts_xml's reading."""

from __future__ import annotations

import re

from connectors import sal_interface
from connectors.sal_interface import ALL_EVENTS, EVENTS, GENERICS, avro_schema
from tests import sal_rules


def test_shipped_interface_files_are_generated_from_the_definitions() -> None:
    """connectors/interfaces/ts_xml/ is what `python -m connectors.sal_interface` writes today."""
    for path, text in sal_interface.interface_files().items():
        assert path.read_text() == text, f"{path.name} is stale: run python -m connectors.sal_interface"


def test_schemas_equal_what_ts_xml_rules_make_of_the_shipped_xml() -> None:
    """Every schema the bridge registers is exactly ts_xml's make_avro_schema of the XML."""
    from_xml = sal_rules.schemas_from_xml(sal_interface.EVENTS_XML, "PromptProcessing")
    from_xml |= sal_rules.schemas_from_xml(sal_interface.GENERICS_XML, "PromptProcessing")
    assert sorted(from_xml) == sorted(event.sal_name for event in ALL_EVENTS)
    for event in ALL_EVENTS:
        assert avro_schema(event) == from_xml[event.sal_name], event.sal_name
        assert sal_interface.rev_code(avro_schema(event)) == sal_rules.rev_code(from_xml[event.sal_name])


def test_the_definitions_obey_ts_xml_naming_and_type_rules() -> None:
    """Names match ts_xml's pattern, no float times, strings are scalars, every item documented."""
    name = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
    for event in ALL_EVENTS:
        assert name.match(event.name), event.name
        for item in event.items:
            assert name.match(item.name) and item.description and item.units, (event.name, item.name)
            assert item.idl_type in sal_interface.AVRO_TYPES
            assert not (item.idl_type == "float" and "Time" in item.name), item.name
            assert item.idl_type != "string" or item.count == 1
    assert [event.name for event in EVENTS] == ["visitSummary", "ccdResult", "metric"]
    assert [item.name for item in GENERICS[0].items] == [
        "name", "level", "message", "traceback", "filePath", "functionName", "lineNumber", "process", "timestamp"]


def test_no_null_unions_and_sal_long_is_avro_int() -> None:
    """SAL types only: no unions anywhere; SAL long (salIndex, seqNum, detector) is Avro int."""
    for event in ALL_EVENTS:
        schema = avro_schema(event)
        assert not any(isinstance(item["type"], list) for item in schema["fields"])
        types = {item["name"]: item["type"] for item in schema["fields"]}
        assert types["salIndex"] == types["private_seqNum"] == types["private_origin"] == "int"
    assert {i["name"]: i["type"] for i in avro_schema(sal_interface.CCD_RESULT)["fields"]}["detector"] == "int"
