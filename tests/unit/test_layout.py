"""The layers hold: each package imports only what its layer may, read from the source (imports inside
functions included), and a worker's process loads none of the developer's tools."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KAFKA_AND_WEB = ("confluent_kafka", "faust", "mode", "aiohttp", "rocksdict", "boto3", "botocore")
STREAMING = ("streams.serde", "streams.runtime", "streams.processors", "streams.pipelines", "streams.web",
             "streams.ops", "streams.observability", "streams.simulate", "streams.app", "streams.config",
             "topology", "connectors", "stack")


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in a file; `from a import b` counts as both `a` and `a.b`."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            yield from ((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `module` is one of the packages or modules named, or inside one."""
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def breaches(folder: str, allowed: Callable[[str], bool] | None = None, *, forbidden: tuple[str, ...] = (),
             skip: tuple[str, ...] = ()) -> list[str]:
    """`file:line module` for each import under `folder` that is forbidden, or (with `allowed`, a predicate)
    not allowed."""
    found = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        if path.name in skip:
            continue
        for line, module in imports(path):
            bad = within(module, forbidden) or (allowed is not None and not allowed(module))
            if bad:
                found.append(f"{path.relative_to(ROOT)}:{line} {module}")
    return found


def core_may_import(module: str) -> bool:
    """The functional core: the standard library, its own modules, the records and the errors."""
    top = module.split(".")[0]
    return (top in sys.stdlib_module_names and top != "streams") or within(
        module, ("streams.core", "streams.serde.records", "streams.serde.base", "streams.errors", "streams"))


@pytest.mark.parametrize(("folder", "allowed", "forbidden", "skip", "rule"), [
    ("streams/core", core_may_import, ("streams.config",), (),
     "the core imports the standard library, its records and errors: no Kafka, Faust, settings or I/O"),
    ("streams/science", None, STREAMING + KAFKA_AND_WEB, (), "science imports nothing of the streaming side"),
    ("topology", None, ("streams", "connectors", "stack"), ("__main__.py",),
     "the topology is data: it imports nothing from streams (its command line aside)"),
    ("streams/runtime", None, ("streams.processors", "streams.pipelines", "connectors", "streams.web"), (),
     "the engine knows no processor by name"),
])
def test_each_layer_imports_only_what_it_may(folder: str, allowed: object, forbidden: tuple[str, ...],
                                            skip: tuple[str, ...], rule: str) -> None:
    """The rules of the README's Layout section, checked over every import."""
    assert breaches(folder, allowed, forbidden=forbidden, skip=skip) == [], rule


def test_only_the_app_imports_the_web_package() -> None:
    """The web API is the app's: no processor, engine or tool reaches into it."""
    found = [f for folder in ("streams", "connectors", "topology", "stack")
             for f in breaches(folder, forbidden=("streams.web",))
             if not f.startswith(("streams/web/", "streams/app.py:"))]
    assert found == []


def test_a_worker_loads_none_of_the_developers_tools() -> None:
    """`faust -A streams.app worker` imports the app: that loads neither the simulator, the test driver,
    the local stack, the tests nor the benchmarks (the commands that use them import them when run)."""
    code = ("import sys, streams.app; print(' '.join(sorted(m for m in sys.modules if m.startswith("
            "('streams.simulate', 'streams.runtime.driver', 'stack', 'tests', 'bench')))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert loaded.stdout.strip() == ""


def project_errors() -> list[type[BaseException]]:
    """Every exception class the project defines (private signals aside), from every module of its packages."""
    found: dict[str, type[BaseException]] = {}
    for package in ("streams", "topology", "connectors", "stack"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
            for name, value in vars(module).items():
                if (isinstance(value, type) and issubclass(value, BaseException) and not name.startswith("_")
                        and value.__module__ == module.__name__):
                    found[f"{value.__module__}.{name}"] = value
    return list(found.values())


def test_every_error_is_retriable_or_not_under_one_root() -> None:
    """One error tree: each class derives from PromptStreamsError and from exactly one of RetriableError and
    NonRetriableError, but for the two outcomes that are no failures."""
    from streams.errors import IgnorableEvent, NonRetriableError, PromptStreamsError, RetriableError
    from streams.pipelines.base import PipelineUnavailable

    outcomes = {IgnorableEvent, PipelineUnavailable, PromptStreamsError, RetriableError, NonRetriableError}
    errors = project_errors()
    assert len(errors) > 30
    stray = [e.__qualname__ for e in errors if not issubclass(e, PromptStreamsError)]
    undecided = [e.__qualname__ for e in errors if e not in outcomes
                 and issubclass(e, RetriableError) == issubclass(e, NonRetriableError)]
    assert stray == [] and undecided == []
