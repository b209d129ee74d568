"""The monitoring dashboard: one web page over the live components, served on loopback by `gpt-trader dashboard`.

    source = LiveSource(monitor, portfolio, scaler, reports_dir=Path("reports"))
    with DashboardServer(source, host="127.0.0.1", port=8050) as server:   # a background thread
        print(server.url)

`source` turns the real components into one JSON-safe snapshot; `app` serves the page, the JSON API and a
Server-Sent-Events stream of snapshots. Names load on first use so `import gpt_trader.monitoring.dashboard` pulls in
neither FastAPI nor uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpt_trader.monitoring.dashboard.app import DashboardServer, create_app, is_loopback, serve_dashboard
    from gpt_trader.monitoring.dashboard.source import DashboardSource, LiveSource, build_snapshot

_EXPORTS = {
    "DashboardServer": "app",
    "create_app": "app",
    "is_loopback": "app",
    "serve_dashboard": "app",
    "DashboardSource": "source",
    "LiveSource": "source",
    "build_snapshot": "source",
}

__all__ = [
    "DashboardServer",
    "DashboardSource",
    "LiveSource",
    "build_snapshot",
    "create_app",
    "is_loopback",
    "serve_dashboard",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
