"""The dashboard in headless Chromium (Debian's /usr/bin/chromium driven by Playwright) over real components.

The page is served by `DashboardServer` on a free loopback port from a `LiveSource` over a demo session (a real
SystemMonitor, Portfolio traded through the PaperBroker, and AutoScaler, fed bundled S&P 500 / NASDAQ bars).
`make test` runs `scripts/install_browser.sh` first (Chromium and playwright); without them these tests fail
with that instruction rather than skip, so a missing browser can never pass as a green run.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from gpt_trader.monitoring.alerts import AlertState
from gpt_trader.monitoring.dashboard.app import DashboardServer
from gpt_trader.monitoring.dashboard.demo import DemoSession

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT_COPY = Path("/tmp/dashboard.png")
TOKEN = "browser-test-token-0123456789"
VIEWPORT = {"width": 1400, "height": 1000}
# Bars replayed before the tests: at 330 the demo holds both symbols (SPX and IXIC) with marks away from their
# average prices, so the positions table and every P&L figure show real non-zero values (at 300 it is flat).
BARS = 330

if not CHROMIUM.exists():
    raise RuntimeError("no /usr/bin/chromium for the dashboard browser tests: run `make browser`")
try:
    from playwright import sync_api
except ImportError as exc:
    raise RuntimeError("playwright is not installed for the dashboard browser tests: run `make browser`") from exc


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSession]:
    """A replay `BARS` bars into 2007-2008 (stepped by the tests, not by a thread), with a drift report on disk."""
    reports = tmp_path_factory.mktemp("reports")
    folder = reports / "drift" / "bundled" / "SPX_1d"  # where the drift module writes a dataset's reports
    folder.mkdir(parents=True)
    (folder / "latest.html").write_text("<html><body><h1>Drift report</h1></body></html>")
    (folder / "latest.json").write_text(json.dumps({"drift_detected": True, "share_drifted": 0.4}))
    demo = DemoSession(reports_dir=reports)
    demo.run(BARS)
    yield demo
    demo.stop()


@pytest.fixture(scope="module")
def server(session: DemoSession) -> Iterator[DashboardServer]:
    """The dashboard on a free loopback port, no token (loopback)."""
    with DashboardServer(session.source(), host="127.0.0.1", port=0, interval_secs=0.25) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless system Chromium (never a downloaded browser)."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless=new"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, server: DashboardServer) -> Iterator[Any]:
    """A fresh tab that records console errors and every URL it requests."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.errors = []
    tab.requests = []
    tab.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    tab.on("console", lambda msg: tab.errors.append(msg.text) if msg.type == "error" else None)
    tab.on("request", lambda req: tab.requests.append(req.url))
    yield tab
    context.close()


def _rounded(x: float | Decimal, places: int) -> Decimal:
    # The page formats the JSON float; ECMA-402 and toFixed round its exact value half away from zero.
    return Decimal(float(x)).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _money(x: float | Decimal) -> str:
    """What the page's Intl en-US currency format shows."""
    r = _rounded(x, 2)
    return f"-${-r:,.2f}" if r < 0 else f"${r:,.2f}"


def _number(x: float | Decimal) -> str:
    """What the page's Intl en-US number format (at most 2 decimals) shows."""
    text = f"{_rounded(x, 2):,.2f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _sign_class(x: float | Decimal) -> str:
    return "pos" if x > 0 else "neg" if x < 0 else ""


def test_dashboard_browser_renders_equity_chart_and_tables(page: Any, server: DashboardServer, session: DemoSession):
    page.goto(server.url)
    page.wait_for_function("() => document.getElementById('equity-line') !== null", timeout=15_000)
    line = page.locator("#equity-line")
    points = int(line.get_attribute("data-points"))
    assert points == len(session.portfolio.equity_curve) == BARS
    # the path really has one coordinate pair per point
    assert line.get_attribute("d").count(",") == points
    assert page.locator("#equity-value").inner_text() == _money(float(session.portfolio.equity()))
    _check_pnl_figures(page, session)
    _check_positions_table(page, session)
    assert page.locator("#pipeline tbody tr").count() == 2  # bundled:IXIC, bundled:SPX
    assert page.locator("#models tbody tr").count() == 2  # the trend signal and the condition classifier
    assert page.locator("#decisions tbody tr").count() >= 1
    assert page.locator("#condition-value").inner_text() == session.scaler.condition.label
    assert page.locator("#drift-link").is_visible()
    assert page.locator("#drift-when").inner_text() == "bundled/SPX_1d: drift"
    assert page.locator("#drift-reports tbody tr").count() == 1
    base = server.url.rstrip("/")
    assert all(url.startswith(base) for url in page.requests), page.requests  # nothing from the internet
    assert page.errors == []


def _check_pnl_figures(page: Any, session: DemoSession) -> None:
    """Every P&L figure shows the demo portfolio's own value, coloured by its sign."""
    portfolio = session.portfolio
    daily = session.monitor.latest("trading.daily_pnl")
    assert daily is not None  # the demo records it every bar
    figures = {
        "pnl-total": portfolio.total_pnl(),
        "pnl-daily": daily,
        "pnl-realized": portfolio.realized_pnl,
        "pnl-unrealized": portfolio.unrealized_pnl(),
    }
    assert all(value != 0 for value in figures.values())  # real figures, not a blank account
    for element_id, value in figures.items():
        figure = page.locator(f"#{element_id}")
        sync_api.expect(figure).to_have_text(_money(value), timeout=10_000)
        assert _sign_class(value) in (figure.get_attribute("class") or "").split()
    assert portfolio.commissions > 0
    assert page.locator("#pnl-commissions").inner_text() == _money(portfolio.commissions)
    return_pct = (float(portfolio.equity()) / float(portfolio.initial_cash) - 1) * 100
    sign = "+" if return_pct >= 0 else ""
    assert page.locator("#pnl-return").inner_text() == f"{sign}{_rounded(return_pct, 2)} %"


def _check_positions_table(page: Any, session: DemoSession) -> None:
    """One row per open position, largest market value first, with the portfolio's quantities, prices and P&L."""
    portfolio = session.portfolio
    assert sorted(portfolio.positions) == ["IXIC", "SPX"]  # what BARS was chosen for
    expected = []
    for symbol, pos in portfolio.positions.items():
        mark = portfolio.mark_price(symbol)
        unrealized = pos.quantity * (mark - pos.avg_price)
        assert unrealized != 0
        cells = [_number(pos.quantity), _money(pos.avg_price), _money(mark), _money(pos.quantity * mark)]
        expected.append((abs(pos.quantity * mark), [symbol, *cells, _money(unrealized)], _sign_class(unrealized)))
    expected.sort(key=lambda row: -row[0])
    rows = page.locator("#positions tbody tr")
    sync_api.expect(rows).to_have_count(len(expected), timeout=10_000)
    for i, (_, cells, sign) in enumerate(expected):
        row = rows.nth(i)
        assert row.locator("th, td").all_inner_texts() == cells
        assert sign in (row.locator("td").last.get_attribute("class") or "").split()


def test_dashboard_browser_ack_and_resolve_change_alert_state(page: Any, server: DashboardServer, session: DemoSession):
    manager = session.monitor.alert_manager
    with session.lock:
        session.monitor.record("trading.drawdown_pct", 30.0)  # a real breach of the demo's critical rule
    (alert,) = [a for a in manager.active_alerts() if a.rule == "deep_drawdown"]
    page.goto(server.url)
    row = page.locator(f'#alerts tr[data-alert-id="{alert.id}"]')
    row.locator("button.ack").click(timeout=15_000)
    sync_api.expect(row.locator("td.state")).to_have_text("acknowledged", timeout=10_000)
    assert alert.state is AlertState.ACKNOWLEDGED
    assert alert.acknowledged_by == "dashboard"
    assert row.locator("button.ack").count() == 0  # acknowledged: only Resolve is left
    row.locator("button.resolve").click()
    sync_api.expect(row).to_have_count(0, timeout=10_000)
    assert alert.id not in {a.id for a in manager.active_alerts()}
    assert page.errors == []


def test_dashboard_browser_live_update_follows_source(page: Any, server: DashboardServer, session: DemoSession):
    page.goto(server.url)
    page.wait_for_function("() => document.getElementById('equity-line') !== null", timeout=15_000)
    sync_api.expect(page.locator("#connection")).to_have_text("live (SSE)", timeout=10_000)
    before = int(page.locator("#equity-line").get_attribute("data-points"))
    with session.lock:
        session.run(7)  # the source changes; the page must follow without a reload
        expected = _money(float(session.portfolio.equity()))
    page.wait_for_function(
        f"() => +document.getElementById('equity-line').dataset.points === {before + 7}", timeout=10_000
    )
    assert page.locator("#equity-value").inner_text() == expected
    assert page.errors == []


def test_dashboard_browser_polling_fallback_updates(page: Any, server: DashboardServer, session: DemoSession):
    page.goto(server.url + "?poll=1")
    sync_api.expect(page.locator("#connection")).to_have_text("polling", timeout=10_000)
    page.wait_for_function("() => document.getElementById('equity-line') !== null", timeout=15_000)
    before = int(page.locator("#equity-line").get_attribute("data-points"))
    with session.lock:
        session.run(3)
    page.wait_for_function(
        f"() => +document.getElementById('equity-line').dataset.points === {before + 3}", timeout=10_000
    )


def test_dashboard_browser_with_token_streams_and_strips_token(browser: Any, session: DemoSession):
    with DashboardServer(session.source(), host="127.0.0.1", port=0, token=TOKEN, interval_secs=0.25) as srv:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            tab = context.new_page()
            assert tab.goto(srv.url.split("?")[0]).status == 401
            tab.goto(srv.url)
            sync_api.expect(tab.locator("#connection")).to_have_text("live (SSE)", timeout=10_000)
            assert "token" not in tab.url  # taken out of the address bar, kept for the tab only
            tab.wait_for_function("() => document.getElementById('equity-line') !== null", timeout=15_000)
            href = tab.locator("#drift-link").get_attribute("href")
            assert href.endswith(f"?token={TOKEN}")
            report = context.request.get(srv.url.split("?")[0] + href)
            assert report.status == 200
            assert "Drift report" in report.text()
        finally:
            context.close()


def test_dashboard_browser_screenshot_shows_chart(page: Any, server: DashboardServer, tmp_path: Path):
    from PIL import Image

    page.goto(server.url)
    page.wait_for_function("() => document.getElementById('equity-line') !== null", timeout=15_000)
    page.wait_for_function("() => document.querySelectorAll('#models .spark path').length > 0", timeout=10_000)
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    shutil.copyfile(shot, SCREENSHOT_COPY)  # for people to look at

    image = Image.open(shot).convert("RGB")
    assert image.width == VIEWPORT["width"]
    assert image.height >= 600
    box = page.locator("#equity-chart").bounding_box()
    chart = image.crop((int(box["x"]), int(box["y"]), int(box["x"] + box["width"]), int(box["y"] + box["height"])))
    colours = chart.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 20  # a drawn line, fill, grid and labels, not a blank panel
    most = max(count for count, _ in colours)
    assert most < 0.95 * chart.width * chart.height
    # the line's accent blue (#1f6feb in the light theme) is present
    assert any(abs(r - 0x1F) < 40 and abs(g - 0x6F) < 40 and abs(b - 0xEB) < 40 for _, (r, g, b) in colours)
