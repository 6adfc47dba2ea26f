"""Finding a Java runtime new enough for each JVM of the stack.

Kafka 4.x needs Java 17; Apicurio Registry 3.3 is compiled for Java 21. A machine may carry
several JDKs, so the stack looks for one that is new enough instead of trusting `java` on PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

from streams.errors import NonRetriableError

JVM_ROOTS = (Path("/usr/lib/jvm"), Path("/opt/java"), Path("/usr/local/lib/jvm"))


class JavaNotFoundError(NonRetriableError, RuntimeError):
    """No Java runtime of the required major version is installed."""


def major_version(java: Path) -> int:
    """The major version `java -version` reports (17 for "17.0.15", 8 for "1.8.0")."""
    out = subprocess.run(
        [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
    ).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def java_candidates() -> list[Path]:
    """Every Java installation found on this machine (JAVA_HOME, PATH, the usual JVM folders)."""
    found: list[Path] = []
    if home := os.environ.get("JAVA_HOME"):
        found.append(Path(home) / "bin" / "java")
    if on_path := shutil.which("java"):
        found.append(Path(on_path))
    for root in JVM_ROOTS:
        if root.is_dir():
            found.extend(sorted(root.glob("*/bin/java"), reverse=True))
    return [java for java in found if java.is_file()]


@cache
def find_java(min_major: int) -> Path:
    """The first installed `java` whose major version is at least `min_major`.

    Raises:
        JavaNotFoundError: when none is installed.
    """
    for java in java_candidates():
        if major_version(java) >= min_major:
            return java
    raise JavaNotFoundError(
        f"no Java {min_major}+ found (looked at JAVA_HOME, PATH and {', '.join(map(str, JVM_ROOTS))})"
    )
