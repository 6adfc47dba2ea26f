"""The worker's web server listens on loopback unless told otherwise, announces the address it is given, and
serves none of faust's own views of its routing and tables."""

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


def test_faust_router_and_table_views_are_not_served() -> None:
    """Of faust's built-in views only its index (`{"status": "OK"}`) is left: no /router/ (every worker's URL),
    no /table/ (table rows)."""
    app = create_app(Settings())
    app.web.blueprints.apply(app.web)
    paths = {resource.canonical for resource in app.web.web_app.router.resources()}  # type: ignore[attr-defined]
    assert not {path for path in paths if path.startswith(("/router", "/table"))}, paths
    assert {"/", "/visits/", "/ocps/jobs", "/metrics"} <= paths
