"""Shell pipelines: placeholders filled safely, exit status, output, the timeout, and no secret in or out."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from streams.config import Settings
from streams.errors import NonRetriableError, RetriableError
from streams.pipelines import execute
from streams.pipelines.base import Outcome
from streams.pipelines.shell import (
    BASE_ENVIRONMENT,
    ShellConfigError,
    ShellPipeline,
    ShellSpec,
    UnsafeValue,
    parse_shell_pipelines,
    placeholder_values,
    render,
)
from streams.secrets import scrub, secret_variables
from streams.serde.records import DetectorProgress, HeldSnap


def settings_in(tmp_path: Path) -> Settings:
    """Data and output roots under tmp_path."""
    (tmp_path / "repo" / "raw").mkdir(parents=True)
    return replace(Settings(), data_root=str(tmp_path / "repo"), output_root=str(tmp_path / "out"))


def progress(tmp_path: Path, **changes: object) -> DetectorProgress:
    """A detector with two raws under the data root."""
    snaps = [HeldSnap(snap=s, exposure_id=2026112500001 + s, uri=(tmp_path / "repo" / "raw" / f"{s}.fits").as_uri(),
                      arrival_time=1.0) for s in (0, 1)]
    base = DetectorProgress(instrument="LSSTCam", group_id="2026-11-25T03:14:15.926", detector=94,
                            survey="BLOCK-365", filters="r_57", snaps=snaps)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_placeholders_become_separate_arguments(tmp_path: Path) -> None:
    """{raws} alone gives one argument per raw; inside text, values are substituted in place."""
    values = placeholder_values(progress(tmp_path), settings_in(tmp_path), tmp_path / "out" / "x")
    argv = render(("pipetask", "run", "-i", "{raws}", "-d", "group='{group}' AND detector={detector}",
                   "--exposures={exposures}"), values)
    assert argv[:3] == ["pipetask", "run", "-i"]
    assert argv[3:5] == [str((tmp_path / "repo" / "raw" / f"{s}.fits").resolve()) for s in (0, 1)]
    assert argv[5:] == ["-d", "group='2026-11-25T03:14:15.926' AND detector=94",
                        "--exposures=2026112500001,2026112500002"]


@pytest.mark.parametrize("changes", [
    {"group_id": "x; rm -rf /"}, {"group_id": "$(touch pwned)"}, {"survey": "--config=evil"},
    {"instrument": "Cam`id`"}, {"filters": "r\nx"}, {"group_id": "2026-11-25T03:14:15.926\n"},
])
def test_event_values_cannot_inject(tmp_path: Path, changes: dict[str, object]) -> None:
    """Metacharacters, option-like values and newlines in event fields are refused."""
    with pytest.raises(UnsafeValue):
        placeholder_values(progress(tmp_path, **changes), settings_in(tmp_path), tmp_path / "out" / "x")


def test_paths_cannot_escape_their_roots(tmp_path: Path) -> None:
    """A raw outside the data root (through .. or a symlink) or an output outside its root is refused."""
    settings = settings_in(tmp_path)
    outside = tmp_path / "secret.fits"
    outside.write_text("x")
    (tmp_path / "repo" / "raw" / "link.fits").symlink_to(outside)
    for uri in ((tmp_path / "repo" / "raw" / "link.fits").as_uri(), f"file://{tmp_path}/repo/../secret.fits"):
        bad = progress(tmp_path, snaps=[HeldSnap(snap=0, exposure_id=1, uri=uri, arrival_time=1.0)])
        with pytest.raises(UnsafeValue, match="outside"):
            placeholder_values(bad, settings, tmp_path / "out" / "x")
    with pytest.raises(UnsafeValue, match="outside"):
        placeholder_values(progress(tmp_path), settings, tmp_path / "elsewhere")


def test_no_shell_is_involved(tmp_path: Path) -> None:
    """A group id reaching the command verbatim is data, not code: nothing is executed from it."""
    settings = settings_in(tmp_path)
    spec = ShellSpec("echo", ("echo", "{group}", ";", "touch", "should-be-echoed"))
    outcome = ShellPipeline(spec, settings).run(progress(tmp_path))
    assert "2026-11-25T03:14:15.926 ; touch should-be-echoed" in outcome.log
    assert not list(Path(settings.output_root).rglob("should-be-echoed"))


def test_exit_status_and_truncated_output(tmp_path: Path) -> None:
    """Exit 0 is success; another status fails with the end of the output; a configured one is retriable."""
    settings = settings_in(tmp_path)
    noisy = ShellSpec("noisy", ("python3", "-c", "print('x' * 10000); print('the end')"))
    assert ShellPipeline(noisy, settings).run(progress(tmp_path)).log.endswith("the end\n")
    assert len(ShellPipeline(noisy, settings).run(progress(tmp_path)).log) <= 4000
    failing = ShellSpec("failing", ("python3", "-c", "import sys; print('bad input'); sys.exit(3)"))
    with pytest.raises(NonRetriableError, match=r"exit status 3.*bad input"):
        ShellPipeline(failing, settings).run(progress(tmp_path))
    with pytest.raises(RetriableError, match="exit status 3"):
        ShellPipeline(replace(failing, retriable_exit_codes=(3,)), settings).run(progress(tmp_path))


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """At the timeout the command and its children are killed."""
    settings = settings_in(tmp_path)
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open('{pid_file}', 'w').write(str(p.pid)); time.sleep(60)")
    spec = ShellSpec("slow", ("python3", "-c", script), timeout=1.0)
    started = time.monotonic()
    with pytest.raises(NonRetriableError, match="timeout"):
        ShellPipeline(spec, settings).run(progress(tmp_path))
    assert time.monotonic() - started < 10
    child = int(pid_file.read_text())
    time.sleep(0.2)
    assert not running(child), "the command's child was killed with it"


def running(pid: int) -> bool:
    """Whether a process exists and is not a zombie (a killed orphan may wait unreaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_configuration_is_checked() -> None:
    """Shell pipelines come from the surveys file; bad ones are refused at start."""
    specs = parse_shell_pipelines('[pipelines.pt]\nkind = "shell"\ncommand = ["pipetask", "{group}"]\ntimeout = 5\n')
    assert specs["pt"] == ShellSpec("pt", ("pipetask", "{group}"), 5.0)
    with pytest.raises(ShellConfigError, match="unknown placeholder"):
        parse_shell_pipelines('[pipelines.pt]\nkind = "shell"\ncommand = ["x", "{password}"]\n')
    with pytest.raises(ShellConfigError, match="non-empty list"):
        parse_shell_pipelines('[pipelines.pt]\nkind = "shell"\ncommand = "rm -rf /"\n')


# ---------------------------------------------------------------------------------------------------------------
# Secrets stay in the worker

SASL_SECRET, TOKEN_SECRET = "sasl-Pa55word-0f-the-worker", "web-token-4b1d7c2e9f"


def with_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings holding secrets, and a worker environment holding them too, with unrelated variables."""
    for name, value in (("PROMPT_STREAMS_SASL_PASSWORD", SASL_SECRET), ("PROMPT_STREAMS_WEB_TOKEN", TOKEN_SECRET),
                        ("UNRELATED_VARIABLE", "not for commands"), ("DECLARED_VARIABLE", "for this command")):
        monkeypatch.setenv(name, value)
    settings = settings_in(tmp_path)
    return replace(settings, cluster=replace(settings.cluster, sasl_password=SASL_SECRET), web_token=TOKEN_SECRET)


ENV_DUMP = (sys.executable, "-c", "import json, os; print(os.environ.get('PROMPT_STREAMS_SASL_PASSWORD')); "
            "print(json.dumps(dict(os.environ)))")


def test_a_command_sees_only_the_allowed_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No secret setting and no unrelated variable reaches the command; the base variables and the ones the
    pipeline declares do."""
    settings = with_secrets(tmp_path, monkeypatch)
    log = ShellPipeline(ShellSpec("env", ENV_DUMP, env=("DECLARED_VARIABLE",)), settings).run(progress(tmp_path)).log
    first, dumped = log.splitlines()
    seen = json.loads(dumped)
    assert first == "None"
    assert set(seen) - {"LC_CTYPE"} <= {*BASE_ENVIRONMENT, "DECLARED_VARIABLE"}  # Python may coerce LC_CTYPE
    assert seen["DECLARED_VARIABLE"] == "for this command" and seen["PATH"] == os.environ["PATH"]
    assert not {name for name in seen if name.startswith("PROMPT_STREAMS_")} and "UNRELATED_VARIABLE" not in seen
    assert SASL_SECRET not in log and TOKEN_SECRET not in log
    undeclared = ShellPipeline(ShellSpec("env", ENV_DUMP), settings).run(progress(tmp_path)).log
    assert "DECLARED_VARIABLE" not in json.loads(undeclared.splitlines()[1])


def test_a_secret_printed_by_a_command_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that prints a secret it found elsewhere (a credentials file) shows `***` in the result's
    output_log on success and in its error_message on failure, through the real execute path; a secret cut by
    the 4000-character tail is masked before the cut, so no part of it remains."""
    settings = with_secrets(tmp_path, monkeypatch)
    credentials = tmp_path / "credentials.json"
    credentials.write_text(json.dumps({"password": SASL_SECRET, "token": TOKEN_SECRET}))
    leak = f"print(open({str(credentials)!r}).read())"
    cut = f"print('z' * 20 + {SASL_SECRET!r} + 'y' * 3990, end='')"  # unmasked, the 4000-long tail cuts the secret
    surveys = tmp_path / "surveys.toml"
    surveys.write_text('[surveys]\n"X*" = []\n' + "".join(
        f'[pipelines.{name}]\nkind = "shell"\ncommand = ["python3", "-c", {json.dumps(code)}]\n'
        for name, code in (("leaky", leak), ("failing", leak + "; exit(3)"), ("long", cut))))
    monkeypatch.setattr(execute, "_settings", replace(settings, surveys_file=str(surveys)))
    execute.pipeline.cache_clear()
    try:
        succeeded, failed, long = (execute.run(progress(tmp_path, pipelines=[name]))
                                   for name in ("leaky", "failing", "long"))
    finally:
        execute.pipeline.cache_clear()
    assert succeeded.status == "success" and '"password": "***", "token": "***"' in succeeded.output_log
    assert failed.status == "failed" and "exit status 3" in failed.error_message
    assert '"password": "***", "token": "***"' in failed.error_message
    assert long.output_log == "z" * 7 + "***" + "y" * 3990
    for result in (succeeded, failed, long):
        for text in (result.output_log, result.error_message):
            assert SASL_SECRET[-8:] not in text and TOKEN_SECRET[-8:] not in text


def test_error_messages_of_any_pipeline_are_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A built-in pipeline's failure that quotes a secret (a typed error, or a bug's exception with repr-escaped
    text) reaches ccd-result with `***` instead."""
    monkeypatch.setattr(execute, "_settings", with_secrets(tmp_path, monkeypatch))
    quoting = 'it\'s "quoted"\\' + SASL_SECRET
    cluster = replace(execute._settings.cluster, registry_password=quoting)
    monkeypatch.setattr(execute, "_settings", execute._settings.on(cluster))
    errors: dict[str, Exception] = {"typed": NonRetriableError(f"cannot connect as user:{SASL_SECRET}@broker"),
                                    "bug": KeyError(quoting)}
    for name, error in errors.items():
        monkeypatch.setitem(execute.PIPELINES, name, lambda _s, e=error: Raising(e))
    execute.pipeline.cache_clear()
    try:
        typed, bug = execute.run(progress(tmp_path, pipelines=["typed"])), execute.run(progress(tmp_path,
                                                                                                pipelines=["bug"]))
    finally:
        execute.pipeline.cache_clear()
    assert typed.error_message == "cannot connect as user:***@broker"
    assert bug.error_class == "KeyError" and bug.error_message == "KeyError: '***'"


class Raising:
    """A built-in pipeline that fails with the given error."""

    name = "raising"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        return {}

    def run(self, progress: DetectorProgress) -> Outcome:
        raise self.error


def test_declared_environment_is_checked() -> None:
    """`env` is a list of variable names; a secret setting's name is refused, however it is spelled."""
    spec = parse_shell_pipelines('[pipelines.pt]\nkind = "shell"\ncommand = ["pipetask"]\n'
                                 'env = ["AWS_PROFILE", "DAF_BUTLER_REPOSITORY_INDEX"]\n')["pt"]
    assert spec.env == ("AWS_PROFILE", "DAF_BUTLER_REPOSITORY_INDEX")
    for secret in ("PROMPT_STREAMS_SASL_PASSWORD", "prompt_streams_web_token", "PROMPT_STREAMS_S3_SECRET_KEY",
                   "PROMPT_STREAMS_CHILE_SASL_PASSWORD", "PROMPT_STREAMS_REGISTRY_PASSWORD"):
        with pytest.raises(ShellConfigError, match=f"env names secret settings \\({secret}\\)"):
            parse_shell_pipelines(f'[pipelines.pt]\nkind = "shell"\ncommand = ["x"]\nenv = ["PATH", "{secret}"]\n')
    for bad in ('"AWS_PROFILE"', '["A=B"]', "[3]", '["1X"]'):
        with pytest.raises(ShellConfigError, match="env must be a list of environment variable names"):
            parse_shell_pipelines(f'[pipelines.pt]\nkind = "shell"\ncommand = ["x"]\nenv = {bad}\n')


def test_secret_settings_are_the_configured_secrets() -> None:
    """The refused names are those of the settings marked secret (a new secret setting is refused too)."""
    assert secret_variables() >= {"PROMPT_STREAMS_SASL_PASSWORD", "PROMPT_STREAMS_WEB_TOKEN",
                                  "PROMPT_STREAMS_REGISTRY_PASSWORD", "PROMPT_STREAMS_S3_SECRET_KEY",
                                  "PROMPT_STREAMS_CHILE_REGISTRY_PASSWORD", "PROMPT_STREAMS_CHILE_SASL_PASSWORD"}
    assert "PROMPT_STREAMS_SASL_USERNAME" not in secret_variables()
    assert scrub("a secret and a secretive one", ["secret", "secretive", ""]) == "a *** and a *** one"
