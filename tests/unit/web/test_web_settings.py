"""The worker's web server listens on loopback unless told otherwise, and announces the address it is given."""

from __future__ import annotations

from dataclasses import replace

from streams.app import create_app
from streams.config import Settings


def test_the_web_server_listens_on_loopback_by_default_and_announces_its_host() -> None:
    app = create_app(Settings())
    assert app.conf.web_bind == "127.0.0.1"
    assert str(app.conf.canonical_url) == "http://127.0.0.1:6066"
    app = create_app(replace(Settings(), web_bind="0.0.0.0", web_host="worker-3.example", web_port=7000))
    assert app.conf.web_bind == "0.0.0.0"
    assert str(app.conf.canonical_url) == "http://worker-3.example:7000"
