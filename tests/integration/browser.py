"""Headless Chromium (Debian's `chromium`, installed by `make setup`), driven by its command-line flags."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

# Virtual time runs the page's timers and waits for its fetches: several polls of the JSON views.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=6000",
         "--window-size=1500,950"]


def chromium() -> str:
    """The browser's path (a missing browser is a set-up error, not a reason to skip)."""
    path = shutil.which("chromium")
    assert path, "chromium is not installed: run `make setup`"
    return path


def _run(*arguments: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *arguments],
                              capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def dom(url: str) -> str:
    """The page's DOM after its scripts ran."""
    return _run("--dump-dom", url)


def screenshot(url: str, path: Path) -> None:
    """A PNG of the page as a person sees it."""
    _run(f"--screenshot={path}", url)
    assert path.stat().st_size > 0


class Elements(HTMLParser):
    """The attributes of every element of a tag with a given class."""

    def __init__(self, tag: str, cls: str) -> None:
        super().__init__()
        self.tag, self.cls = tag, cls
        self.found: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == self.tag and self.cls in values.get("class", "").split():
            self.found.append(values)


def elements(html: str, tag: str, cls: str) -> list[dict[str, str]]:
    """The attributes of every `<tag class="cls">` in `html`."""
    parser = Elements(tag, cls)
    parser.feed(html)
    return parser.found
