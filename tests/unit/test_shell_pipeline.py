"""Shell pipelines: placeholders filled safely, exit status, output, and the timeout."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from streams.config import Settings
from streams.errors import NonRetriableError, RetriableError
from streams.pipelines.shell import (
    ShellConfigError,
    ShellPipeline,
    ShellSpec,
    UnsafeValue,
    parse_shell_pipelines,
    placeholder_values,
    render,
)
from streams.records import DetectorProgress, HeldSnap


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
    {"instrument": "Cam`id`"}, {"filters": "r\nx"},
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
