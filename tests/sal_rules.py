"""ts_xml's rules for a SAL topic over Kafka, written from the reference (sal_kafka.md), not from
the bridge's code: what the observatory's reader derives from a component's XML and accepts.

Used by the tests as an independent judge of what the bridge writes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

# topic_info._PRIVATE_FIELD_LIST: (name, SAL type, units, description)
PRIVATE_FIELDS = [
    ("salIndex", "long", "unitless", "SAL index (only present for indexed SAL components)"),
    ("private_sndStamp", "double", "second", "Time of instance publication"),
    ("private_rcvStamp", "double", "second", "Time of instance reception"),
    ("private_efdStamp", "double", "second",
     "UTC time for EFD timestamp. An integer (the number of leap seconds) different from private_sndStamp."),
    ("private_kafkaStamp", "double", "second", "TAI time at which the Kafka message was created."),
    ("private_seqNum", "long", "unitless", "Sequence number"),
    ("private_revCode", "string", "unitless", "Revision hashcode"),
    ("private_identity", "string", "unitless",
     "Identity of publisher: SAL component name for a CSC or user@host for a user"),
    ("private_origin", "long", "unitless", "Process ID of publisher"),
]
# field_info.AVRO_TYPES (SAL long is 4 bytes: Avro int)
AVRO = {"boolean": "boolean", "byte": "int", "short": "int", "int": "int", "long": "int",
        "unsigned short": "int", "long long": "long", "unsigned int": "long", "float": "float",
        "double": "double", "string": "string"}
ZERO = {"boolean": False, "int": 0, "long": 0, "float": 0.0, "double": 0.0, "string": ""}


def _field(name: str, sal_type: str, units: str, description: str, count: int) -> dict[str, Any]:
    avro = AVRO[sal_type]
    if count > 1 and sal_type != "string":
        return {"name": name, "type": {"type": "array", "items": avro}, "default": [ZERO[avro]] * count,
                "description": description, "units": units}
    return {"name": name, "type": avro, "default": ZERO[avro], "description": description, "units": units}


def schemas_from_xml(path: Path, component: str, indexed: bool = True) -> dict[str, dict[str, Any]]:
    """sal_name -> Avro schema, for every SALEvent of an XML file, as ts_xml's make_avro_schema."""
    found = {}
    for event in ElementTree.parse(path).getroot().iter("SALEvent"):
        sal_name = (event.findtext("EFDB_Topic") or "").split("_", 1)[1]
        private = PRIVATE_FIELDS if indexed else PRIVATE_FIELDS[1:]
        fields = [_field(n, t, u, d, 1) for n, t, u, d in private]
        for item in event.iter("item"):
            fields.append(_field(item.findtext("EFDB_Name") or "", item.findtext("IDL_Type") or "",
                                 item.findtext("Units", "unitless"), (item.findtext("Description") or "").strip(),
                                 int(item.findtext("Count", "1"))))
        found[sal_name] = {"type": "record", "name": sal_name, "namespace": f"lsst.sal.{component}",
                           "fields": fields, "description": (event.findtext("Description") or "").strip()}
    return found


def rev_code(schema: dict[str, Any]) -> str:
    """First 8 hex digits of md5(json.dumps(schema, indent=4))."""
    return hashlib.md5(json.dumps(schema, indent=4).encode(), usedforsecurity=False).hexdigest()[:8]


def key(component: str, index: int, sal_name: str) -> bytes:
    """The salobj key string of an event of an indexed component."""
    return ('{ "name": "' + component + '", "index": ' + str(index) + ', "topic": "' + sal_name + '" }').encode()
