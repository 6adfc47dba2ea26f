"""The `PromptProcessing` SAL component: its events, defined once, and what ts_xml makes of them.

The observatory's readers (ts_salobj) only accept a topic whose Avro schema is what ts_xml
generates from the component's XML (`TopicInfo.make_avro_schema`), so everything here follows
those rules: the record is `logevent_<name>` in namespace `lsst.sal.PromptProcessing`; its fields
are salIndex, the eight private fields, then the items in order; each field carries `name, type,
default, description, units`; SAL `long` is Avro `int`; `Count > 1` is an array with Count zeros
as default; no null unions. The ts_xml interface files under `interfaces/ts_xml/` (here, package data) are generated
from the same definitions (`python -m connectors.sal_interface`), so the schemas the bridge
registers and the XML the observatory adds to ts_xml cannot drift apart (a test checks both).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

COMPONENT = "PromptProcessing"
INTERFACE_DIR = Path(__file__).resolve().parent / "interfaces" / "ts_xml" / COMPONENT
EVENTS_XML = INTERFACE_DIR / f"{COMPONENT}_Events.xml"
SUBSYSTEM_XML = INTERFACE_DIR / "SALSubsystems_entry.xml"
GENERICS_XML = INTERFACE_DIR / "SALGenerics_used.xml"

AVRO_TYPES = {
    "boolean": "boolean", "byte": "int", "short": "int", "int": "int", "long": "int", "unsigned short": "int",
    "long long": "long", "unsigned int": "long", "float": "float", "double": "double", "string": "string",
}
"""ts_xml's `field_info.AVRO_TYPES` since ts_xml 42ff0370: a SAL `long` is 4 bytes, Avro `int`."""
DEFAULTS = {"boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0, "string": ""}


@dataclass(frozen=True)
class Item:
    """One `<item>` of a SAL topic."""

    name: str
    idl_type: str
    description: str
    units: str = "unitless"
    count: int = 1


@dataclass(frozen=True)
class Event:
    """One `<SALEvent>`: `logevent_<name>`."""

    name: str
    description: str
    items: tuple[Item, ...]

    @property
    def sal_name(self) -> str:
        """The SAL topic name, e.g. `logevent_visitSummary`."""
        return f"logevent_{self.name}"


PRIVATE = (
    Item("salIndex", "long", "SAL index (only present for indexed SAL components)"),
    Item("private_sndStamp", "double", "Time of instance publication", "second"),
    Item("private_rcvStamp", "double", "Time of instance reception", "second"),
    Item("private_efdStamp", "double", "UTC time for EFD timestamp. An integer (the number of leap seconds) "
         "different from private_sndStamp.", "second"),
    Item("private_kafkaStamp", "double", "TAI time at which the Kafka message was created.", "second"),
    Item("private_seqNum", "long", "Sequence number"),
    Item("private_revCode", "string", "Revision hashcode"),
    Item("private_identity", "string", "Identity of publisher: SAL component name for a CSC or user@host for a user"),
    Item("private_origin", "long", "Process ID of publisher"),
)
"""ts_xml's `topic_info._PRIVATE_FIELD_LIST`, in order (salIndex first: the component is indexed)."""


def _tai(name: str, what: str) -> Item:
    return Item(name, "double", f"{what} (TAI, Unix seconds); NaN if it did not happen.", "second")


INSTRUMENT = Item("instrument", "string", "Instrument name, e.g. LSSTCam.")
GROUP_ID = Item("groupId", "string", "Group id of the visit, as sent in the ScriptQueue's nextVisit.")
SURVEY = Item("survey", "string", "Survey (scheduler block) of the visit, which chose the pipelines.")


def _common(detector_doc: str) -> tuple[Item, ...]:
    return INSTRUMENT, GROUP_ID, Item("detector", "long", detector_doc), SURVEY


VISIT_SUMMARY = Event("visitSummary", "Outcome of one visit of Prompt Processing: sent once per visit, when every "
                      "expected detector has a result or the visit deadline passed.", (
    INSTRUMENT, GROUP_ID, SURVEY,
    Item("reason", "string", "Why the summary was sent: complete, deadline or canceled."),
    Item("detectorsExpected", "long", "Detectors the visit was fanned out to."),
    Item("successCount", "long", "Detectors processed successfully."),
    Item("failedCount", "long", "Detectors whose pipeline failed."),
    Item("timeoutCount", "long", "Detectors with no result in time (no raw, or the visit deadline)."),
    Item("canceledCount", "long", "Detectors stopped by nextVisitCanceled."),
    Item("ignoredCount", "long", "Detectors with no pipeline for the survey."),
    Item("failedDetectors", "string", "Comma-separated ids of the detectors that failed or timed out."),
    Item("exposureIds", "string", "Comma-separated exposure ids processed in the visit."),
    _tai("nextVisitTime", "private_sndStamp of the visit's nextVisit"),
    Item("nextVisitToFirstRaw", "double", "From nextVisit to the first raw of any detector; NaN if none came.",
         "second"),
    Item("rawToResultMedian", "double", "Median over detectors of first raw to result; NaN if none.", "second"),
    Item("rawToResultMax", "double", "Maximum over detectors of first raw to result; NaN if none.", "second"),
    Item("nextVisitToSummary", "double", "From nextVisit to this summary.", "second"),
    _tai("summaryTime", "When the summary was made"),
))

CCD_RESULT = Event("ccdResult", "Outcome of one detector of one visit: sent once per expected detector.", (
    *_common("Detector id."),
    Item("status", "string", "One of success, failed, timeout, canceled, ignored."),
    Item("retriable", "boolean", "For failed: whether running the detector again is safe."),
    Item("errorClass", "string", "Class of the error for failed or timeout; empty otherwise."),
    Item("errorMessage", "string", "What went wrong, for a person; empty on success."),
    Item("pipeline", "string", "Pipeline that ran; empty if none did."),
    Item("exposureIds", "string", "Comma-separated exposure ids of the raws processed."),
    Item("snapsExpected", "long", "Snaps the visit announced (nimages); 0 if unknown."),
    Item("snapsProcessed", "long", "Snaps processed."),
    _tai("nextVisitTime", "private_sndStamp of the visit's nextVisit"),
    _tai("fanoutTime", "When the detector was fanned out"),
    _tai("preloadDoneTime", "When preloading finished"),
    _tai("firstRawTime", "Arrival of the first raw"),
    _tai("processStartTime", "Pipeline start"),
    _tai("processEndTime", "Pipeline end"),
    _tai("resultTime", "When the result was made"),
    Item("worker", "string", "Worker that produced the result."),
))

METRIC = Event("metric", "One Prompt Processing measurement: per detector (detector >= 0) or per visit "
               "(detector = -1).", (
    *_common("Detector id, or -1 for a per-visit metric."),
    Item("name", "string", "Metric name, e.g. prep_butlerTotalTime or nextVisitToSummaryTime."),
    Item("value", "double", "Measured value, in the unit given by the unit field; NaN if not measured."),
    Item("unit", "string", "Unit of value (astropy unit string, e.g. s, count)."),
    _tai("measurementTime", "When the measurement was made"),
    Item("tags", "string", "Further identifiers as comma-separated key=value pairs."),
))

LOG_MESSAGE = Event("logMessage", "A log message.", (
    Item("name", "string", "Log name."),
    Item("level", "int", "Message level, a Python logging level: error=40, warning=30, info=20, debug=10."),
    Item("message", "string", "Log message."),
    Item("traceback", "string", 'Exception traceback; "" if not an exception.'),
    Item("filePath", "string", "Path to source file."),
    Item("functionName", "string", "Function or method name."),
    Item("lineNumber", "long", "Line number in the file specified by filePath."),
    Item("process", "long", "Process ID."),
    Item("timestamp", "double", "The time at which the condition being reported was observed (TAI unix seconds). "
         "0 if unspecified.", "second"),
))
"""ts_xml's generic `SALGeneric_logevent_logMessage` (mandatory for every component), verbatim."""

EVENTS = (VISIT_SUMMARY, CCD_RESULT, METRIC)
"""The component's own events, in its Events XML."""
GENERICS = (LOG_MESSAGE,)
"""The generic events the bridge writes (defined in ts_xml's SALGenerics.xml, not by us)."""
ALL_EVENTS = (*EVENTS, *GENERICS)


# -- ts_xml's rules -----------------------------------------------------------------------------
def topic_name(event: Event, subname: str = "sal") -> str:
    """The Kafka topic: `lsst.<subname>.PromptProcessing.logevent_<name>`."""
    return f"lsst.{subname}.{COMPONENT}.{event.sal_name}"


def field_schema(item: Item) -> dict[str, Any]:
    """One field as `FieldInfo.make_avro_schema` writes it (key order matters for the revCode)."""
    scalar = AVRO_TYPES[item.idl_type]
    count = 1 if item.idl_type == "string" else item.count
    avro: Any = {"type": "array", "items": scalar} if count > 1 else scalar
    default: Any = [DEFAULTS[scalar]] * count if count > 1 else DEFAULTS[scalar]
    return {"name": item.name, "type": avro, "default": default, "description": item.description,
            "units": item.units}


def avro_schema(event: Event) -> dict[str, Any]:
    """The event's Avro schema as `TopicInfo.make_avro_schema` makes it for an indexed component."""
    return {"type": "record", "name": event.sal_name, "namespace": f"lsst.sal.{COMPONENT}",
            "fields": [field_schema(item) for item in (*PRIVATE, *event.items)],
            "description": event.description}


def rev_code(schema: dict[str, Any]) -> str:
    """private_revCode: the first 8 hex digits of the MD5 of the schema as `json.dumps(indent=4)`."""
    return hashlib.md5(json.dumps(schema, indent=4).encode(), usedforsecurity=False).hexdigest()[:8]


# -- the ts_xml interface files -----------------------------------------------------------------
def _item_xml(item: Item) -> str:
    size = "\n        <IDL_Size>1</IDL_Size>" if item.idl_type == "string" else ""
    return (f"      <item>\n        <EFDB_Name>{item.name}</EFDB_Name>\n"
            f"        <Description>{escape(item.description)}</Description>\n"
            f"        <IDL_Type>{item.idl_type}</IDL_Type>{size}\n        <Units>{item.units}</Units>\n"
            f"        <Count>{item.count}</Count>\n      </item>\n")


def _event_xml(event: Event, subsystem: str) -> str:
    items = "".join(_item_xml(item) for item in event.items)
    return (f"    <SALEvent>\n      <Subsystem>{subsystem}</Subsystem>\n"
            f"      <EFDB_Topic>{subsystem}_{event.sal_name}</EFDB_Topic>\n"
            f"      <Description>{escape(event.description)}</Description>\n{items}    </SALEvent>\n")


def _event_set_xml(events: tuple[Event, ...], subsystem: str) -> str:
    body = "".join(_event_xml(event, subsystem) for event in events)
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            '<?xml-stylesheet type="text/xsl" href="http://project.lsst.org/ts/sal_objects/schema/SALEventSet.xsl"?>\n'
            '<SALEventSet xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:noNamespaceSchemaLocation="http://project.lsst.org/ts/sal_objects/schema/SALEventSet.xsd">\n'
            f"{body}</SALEventSet>\n")


def events_xml() -> str:
    """`PromptProcessing_Events.xml`, as ts_xml keeps it under `data/sal_interfaces/PromptProcessing/`."""
    return _event_set_xml(EVENTS, COMPONENT)


def generics_xml() -> str:
    """The generic events the bridge writes, as ts_xml's SALGenerics.xml defines them (for the test)."""
    return _event_set_xml(GENERICS, "SALGeneric")


def subsystem_xml() -> str:
    """The entry to add to ts_xml's `SALSubsystems.xml`."""
    return ("<SALSubsystem>\n  <Name>PromptProcessing</Name>\n"
            "  <Description>Rubin Prompt Processing (Prompt Streams): visit summaries, per-CCD results, "
            "metrics and worker log messages, sent by the SAL bridge.</Description>\n"
            "  <IndexEnumeration>any</IndexEnumeration>\n  <AddedGenerics>mandatory</AddedGenerics>\n"
            "  <Simulator>\n    <Enabled>no</Enabled>\n  </Simulator>\n</SALSubsystem>\n")


def interface_files() -> dict[Path, str]:
    """Every shipped interface file and its generated text."""
    return {EVENTS_XML: events_xml(), GENERICS_XML: generics_xml(), SUBSYSTEM_XML: subsystem_xml()}


def main() -> int:
    """Write the interface files; with `--check`, exit 1 if any is out of date instead."""
    files = interface_files()
    if "--check" in sys.argv:
        return 0 if all(path.exists() and path.read_text() == text for path, text in files.items()) else 1
    INTERFACE_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
