"""Shell pipelines: any external command (such as `pipetask run`) as a per-detector pipeline.

Configured in the surveys file as an argument list with placeholders:

    [pipelines.pipetask-ap]
    kind = "shell"
    command = ["pipetask", "run", "-b", "{repo}", "-i", "{raws}", "-o", "{output_dir}",
               "-d", "instrument='{instrument}' AND group='{group}' AND detector={detector}"]
    timeout = 600
    env = ["AWS_PROFILE", "DAF_BUTLER_REPOSITORY_INDEX"]   # optional: variables to pass through

No shell is involved: the list is executed as it is, after placeholders are replaced by values
that are checked first (a group id or path from an event can never add an argument, start an
option, or point outside its root). `{raws}` on its own expands to one argument per raw.
Exit status 0 is success; the end of the output is attached to the result; at the timeout the
whole process group is killed.

The command does not inherit the worker's environment (its SASL password, web token, ...): only
PATH, HOME, LANG, LC_ALL, TZ, TMPDIR, PYTHONPATH and the variables its `env` names, never a secret
setting's. Configured secret values are masked (`***`) in its output before it leaves the worker.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from streams.config import Settings
from streams.errors import ConfigurationError, NonRetriableError, RetriableError
from streams.pipelines.base import Outcome
from streams.secrets import scrub, secret_variables
from streams.serde.records import DetectorProgress

PLACEHOLDER = re.compile(r"\{(\w+)\}")
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:+=@,-]*$")
LIST_PLACEHOLDERS = ("raws", "exposures")
KNOWN = ("instrument", "group", "detector", "survey", "filter", "exposures", "raws", "output_dir", "repo")
LOG_LIMIT = 4000
BASE_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH")
"""What every command gets from the worker's environment (when set): enough to find programs and decode text."""
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ShellConfigError(ConfigurationError):
    """A shell pipeline is badly configured."""


class UnsafeValue(NonRetriableError):  # noqa: N818 (a refusal: running again would refuse again)
    """A value from an event cannot be passed to a command safely."""


@dataclass(frozen=True)
class ShellSpec:
    """One configured external pipeline."""

    name: str
    command: tuple[str, ...]
    timeout: float = 600.0
    retriable_exit_codes: tuple[int, ...] = ()
    env: tuple[str, ...] = ()
    """Environment variables passed through besides BASE_ENVIRONMENT."""


def _environment_names(name: str, table: dict[str, object]) -> tuple[str, ...]:
    """The pipeline's `env` list, checked: variable names, none of them a secret setting's."""
    names = table.get("env", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and VARIABLE.fullmatch(n) for n in names):
        raise ShellConfigError(f"pipeline {name}: env must be a list of environment variable names")
    secret = sorted(n for n in names if n.upper() in secret_variables())
    if secret:
        raise ShellConfigError(f"pipeline {name}: env names secret settings ({', '.join(secret)}): they are never "
                               "passed to a command")
    return tuple(names)


def parse_shell_pipelines(text: str) -> dict[str, ShellSpec]:
    """The `[pipelines.<name>]` tables of kind "shell" in a surveys file.

    Raises:
        ShellConfigError: a missing or empty command, an unknown placeholder, or an `env` that is not a list of
            variable names or names a secret setting.
    """
    specs = {}
    for name, table in tomllib.loads(text).get("pipelines", {}).items():
        if table.get("kind") != "shell":
            continue
        command = table.get("command")
        if not isinstance(command, list) or not command or not all(isinstance(a, str) for a in command):
            raise ShellConfigError(f"pipeline {name}: command must be a non-empty list of strings")
        for argument in command:
            for placeholder in PLACEHOLDER.findall(argument):
                if placeholder not in KNOWN:
                    raise ShellConfigError(f"pipeline {name}: unknown placeholder {{{placeholder}}}")
        specs[name] = ShellSpec(name, tuple(command), float(table.get("timeout", 600.0)),
                                tuple(int(c) for c in table.get("retriable_exit_codes", [])),
                                _environment_names(name, table))
    return specs


def _safe(name: str, value: str) -> str:
    """`value` if it is inert as one argument; `fullmatch`, as `$` would let a trailing newline through."""
    if value.startswith("-") or not SAFE_VALUE.fullmatch(value):
        raise UnsafeValue(f"{name} value {value!r} cannot be passed to a command")
    return value


def _inside(name: str, path: Path, root: Path) -> str:
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UnsafeValue(f"{name} {path} is outside {root}")
    return _safe(name, str(resolved))


def placeholder_values(progress: DetectorProgress, settings: Settings, output_dir: Path) -> dict[str, str | list[str]]:
    """The values of every placeholder for this detector, each checked.

    Raises:
        UnsafeValue: a value that could inject an argument or escape its root.
    """
    raws: list[str] = []
    for snap in progress.snaps:
        parts = urlsplit(snap.uri)
        raws.append(_inside("raw", Path(unquote(parts.path)), Path(settings.data_root)) if parts.scheme == "file"
                    else _safe("raw", snap.uri))
    return {
        "instrument": _safe("instrument", progress.instrument), "group": _safe("group", progress.group_id),
        "detector": str(int(progress.detector)), "survey": _safe("survey", progress.survey),
        "filter": _safe("filter", progress.filters), "exposures": [str(int(s.exposure_id)) for s in progress.snaps],
        "raws": raws, "output_dir": _inside("output_dir", output_dir, Path(settings.output_root)),
        "repo": _safe("repo", str(Path(settings.data_root).resolve())),
    }


def render(command: tuple[str, ...], values: dict[str, str | list[str]]) -> list[str]:
    """The argument list: `{raws}` alone expands to one argument per raw; elsewhere lists join with commas."""
    arguments: list[str] = []
    for argument in command:
        alone = PLACEHOLDER.fullmatch(argument)
        if alone and alone.group(1) in LIST_PLACEHOLDERS:
            arguments.extend(values[alone.group(1)])
            continue

        def fill(match: re.Match[str]) -> str:
            value = values[match.group(1)]
            return ",".join(value) if isinstance(value, list) else value

        arguments.append(PLACEHOLDER.sub(fill, argument))
    return arguments


def environment(names: tuple[str, ...] = ()) -> dict[str, str]:
    """A command's environment: BASE_ENVIRONMENT and `names` from this process's, where set; never a secret
    setting's variable (the configuration refuses them; this holds even for a spec built by hand)."""
    secret = secret_variables()
    return {name: value for name in (*BASE_ENVIRONMENT, *names)
            if name.upper() not in secret and (value := os.environ.get(name)) is not None}


def run_command(arguments: list[str], timeout: float, cwd: Path, *, env: dict[str, str] | None = None,
                secrets: tuple[str, ...] = ()) -> tuple[int | None, str]:
    """(exit status or None on timeout, combined output's end, `secrets` masked); a timeout kills the process
    group. `env` None gives the command `environment()`, not the worker's."""
    with subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          cwd=cwd, start_new_session=True, env=environment() if env is None else env) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
            status: int | None = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            status = None
    text = scrub(output.decode(errors="replace"), secrets)  # before the cut: no secret is left half-recognisable
    return status, text[-LOG_LIMIT:]


class ShellPipeline:
    """An external command run once per detector."""

    def __init__(self, spec: ShellSpec, settings: Settings) -> None:
        self.name = spec.name
        self.spec = spec
        self.settings = settings

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """External pipelines fetch their own inputs."""
        return {}

    def run(self, progress: DetectorProgress) -> Outcome:
        """Run the command; its exit status decides success.

        Raises:
            UnsafeValue: an event value that cannot be passed safely.
            RetriableError: a configured retriable exit status.
            NonRetriableError: any other failure or the timeout (outside state may have changed).
        """
        output_dir = Path(self.settings.output_root) / progress.instrument / progress.group_id / str(progress.detector)
        values = placeholder_values(progress, self.settings, output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        status, log = run_command(render(self.spec.command, values), self.spec.timeout, output_dir,
                                  env=environment(self.spec.env), secrets=tuple(self.settings.secrets()))
        if status is None:
            raise NonRetriableError(f"{self.name}: killed after the {self.spec.timeout:.0f} s timeout; output: {log}")
        if status in self.spec.retriable_exit_codes:
            raise RetriableError(f"{self.name}: exit status {status}; output: {log}")
        if status != 0:
            raise NonRetriableError(f"{self.name}: exit status {status}; output: {log}")
        return Outcome(metrics={"exitStatus": 0.0}, output_uris=[output_dir.as_uri()], log=log)
