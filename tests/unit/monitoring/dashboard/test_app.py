"""The dashboard HTTP API over real components: snapshot, alert actions, auth, bind rules, SSE and hosting."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from gpt_trader.core.errors import ConfigError
from gpt_trader.monitoring.alerts import AlertState
from gpt_trader.monitoring.dashboard.app import (
    STATIC_DIR,
    DashboardServer,
    check_bind,
    create_app,
    format_url,
    is_loopback,
    serve_dashboard,
)
from gpt_trader.monitoring.dashboard.source import LiveSource
from gpt_trader.monitoring.system import SystemMonitor
from gpt_trader.trading.portfolio import Portfolio
from tests.unit.monitoring.dashboard.conftest import TOKEN

LOCAL = "http://127.0.0.1"


@pytest.fixture
def client(source: LiveSource) -> Iterator[TestClient]:
    """The app without a token, addressed by a loopback host name."""
    with TestClient(create_app(source, token=None), base_url=LOCAL) as c:
        yield c


@pytest.fixture
def secured(source: LiveSource) -> Iterator[TestClient]:
    """The app with a token, addressed by a public host name (as when bound beyond loopback)."""
    with TestClient(create_app(source, token=TOKEN), base_url="http://dashboard.example") as c:
        yield c


def test_page_served_with_csp_and_only_local_assets(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert 'id="equity-chart"' in page.text
    for path in ("/static/dashboard.js", "/static/dashboard.css"):
        assert client.get(path).status_code == 200
    # Nothing may come from the internet at run time: no absolute URL but the SVG namespace.
    for file in STATIC_DIR.iterdir():
        urls = set(re.findall(r"https?://[^\s\"'`)]+", file.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (file.name, urls)


def test_snapshot_endpoint_returns_sections(client: TestClient, portfolio: Portfolio) -> None:
    res = client.get("/api/snapshot")
    assert res.status_code == 200
    assert res.headers["cache-control"] == "no-store"
    snap = res.json()
    assert snap["pnl"]["equity"] == pytest.approx(float(portfolio.equity()))
    assert len(snap["equity_curve"]) == 3
    assert {"alerts", "pipeline", "models", "scaling", "health", "drift"} <= set(snap)


def test_ack_endpoint_acknowledges_real_alert(client: TestClient, monitor: SystemMonitor, loss_alert: str) -> None:
    res = client.post(f"/api/alerts/{loss_alert}/ack", json={"by": "carol"})
    assert res.status_code == 200
    assert (res.json()["state"], res.json()["acknowledged_by"]) == ("acknowledged", "carol")
    (alert,) = monitor.alert_manager.active_alerts()
    assert (alert.state, alert.acknowledged_by) == (AlertState.ACKNOWLEDGED, "carol")


def test_resolve_endpoint_without_body_resolves_as_dashboard(
    client: TestClient, monitor: SystemMonitor, loss_alert: str
) -> None:
    res = client.post(f"/api/alerts/{loss_alert}/resolve")
    assert res.status_code == 200
    assert monitor.alert_manager.active_alerts() == []
    assert monitor.alert_manager.history()[0].resolved_by == "dashboard"


def test_ack_unknown_alert_returns_404(client: TestClient) -> None:
    assert client.post("/api/alerts/doesnotexist/ack").status_code == 404


def test_drift_report_absent_404_then_served(client: TestClient, tmp_path) -> None:
    url = "/reports/drift/bundled/SPX_1d/latest.html"
    assert client.get(url).status_code == 404
    folder = tmp_path / "reports" / "drift" / "bundled" / "SPX_1d"
    folder.mkdir(parents=True)
    (folder / "latest.html").write_text("<html><body>drift ok</body></html>")
    (folder / "latest.json").write_text("{}")
    res = client.get(url)
    assert res.status_code == 200
    assert "drift ok" in res.text
    assert client.get("/reports/drift/bundled/SPX_1d/latest.json").status_code == 404  # only the HTML reports
    assert client.get("/api/snapshot").json()["drift"][0]["url"] == url.lstrip("/")


@pytest.mark.parametrize("path", ["/", "/api/snapshot", "/api/stream", "/reports/drift/x/latest.html"])
def test_token_set_request_without_token_returns_401(secured: TestClient, path: str) -> None:
    res = secured.get(path)
    assert res.status_code == 401
    assert res.headers["www-authenticate"] == "Bearer"


def test_token_set_wrong_token_returns_401(secured: TestClient, loss_alert: str) -> None:
    assert secured.get("/api/snapshot", headers={"Authorization": "Bearer " + "x" * 26}).status_code == 401
    assert secured.get("/api/snapshot", params={"token": TOKEN[:-1]}).status_code == 401
    assert secured.post(f"/api/alerts/{loss_alert}/ack").status_code == 401


def test_token_set_header_or_query_token_accepted(secured: TestClient, monitor: SystemMonitor, loss_alert: str) -> None:
    assert secured.get("/api/snapshot", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert secured.get("/", params={"token": TOKEN}).status_code == 200
    res = secured.post(f"/api/alerts/{loss_alert}/ack", headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 200
    assert monitor.alert_manager.active_alerts()[0].state is AlertState.ACKNOWLEDGED


def test_healthz_and_static_code_need_no_token(secured: TestClient) -> None:
    assert secured.get("/healthz").json() == {"status": "ok"}
    assert secured.get("/static/dashboard.js").status_code == 200


def test_no_token_foreign_host_header_returns_403(source: LiveSource) -> None:
    # DNS rebinding: a page on evil.example resolving to 127.0.0.1 still sends Host: evil.example.
    with TestClient(create_app(source, token=None), base_url="http://evil.example:8050") as c:
        assert c.get("/api/snapshot").status_code == 403


def test_cross_origin_post_returns_403(client: TestClient, monitor: SystemMonitor, loss_alert: str) -> None:
    res = client.post(f"/api/alerts/{loss_alert}/ack", headers={"Origin": "http://evil.example"})
    assert res.status_code == 403
    assert monitor.alert_manager.active_alerts()[0].state is AlertState.FIRING
    same = client.post(f"/api/alerts/{loss_alert}/ack", headers={"Origin": LOCAL})
    assert same.status_code == 200


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.5", False),
        ("dashboard.example", False),
    ],
)
def test_is_loopback_addresses_classified(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_check_bind_non_loopback_without_token_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(ConfigError, match="at least 16"):
        check_bind("0.0.0.0", "short")
    check_bind("0.0.0.0", TOKEN)
    check_bind("127.0.0.1", None)


def test_dashboard_server_non_loopback_without_token_refused(source: LiveSource) -> None:
    with pytest.raises(ConfigError):
        DashboardServer(source, host="0.0.0.0", port=0)
    with pytest.raises(ConfigError):
        serve_dashboard(source, host="192.168.1.5", port=0)


def test_format_url_wildcard_and_ipv6_shown_reachably() -> None:
    assert format_url("0.0.0.0", 8050, "tok") == "http://127.0.0.1:8050/?token=tok"
    assert format_url("::1", 8050) == "http://[::1]:8050/"


def _events(lines: Iterator[str]) -> Iterator[str]:
    """The data of each `event: snapshot` in an SSE line stream."""
    event = None
    for line in lines:
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and event == "snapshot":
            yield line.split(":", 1)[1].strip()
            event = None


def test_dashboard_server_stream_pushes_changes_then_stops(source: LiveSource, monitor: SystemMonitor) -> None:
    import orjson

    server = DashboardServer(source, host="127.0.0.1", port=0, interval_secs=0.1).start()
    try:
        assert server.port != 0
        assert server.url == f"http://127.0.0.1:{server.port}/"
        with (
            httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as http,
            http.stream("GET", "/api/stream") as res,
        ):
            assert res.headers["content-type"].startswith("text/event-stream")
            events = _events(res.iter_lines())
            first = orjson.loads(next(events))
            assert first["alerts"]["active"] == []
            monitor.record_trading_metrics(daily_pnl=-6_000)  # the source changes: the stream must say so
            second = orjson.loads(next(events))
            assert second["alerts"]["active"][0]["rule"] == "high_loss"
    finally:
        server.stop()
    assert not any(t.name == "dashboard-server" and t.is_alive() for t in threading.enumerate())
