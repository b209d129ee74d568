"""`gpt-trader`: the terminal shell over the library. Each module registers its commands on the shared app."""

from gpt_trader.cli import dashboard, data, live, models, rl, scale, stream, transformer  # noqa: F401  (imported to register commands)
from gpt_trader.cli.app import app

__all__ = ["app"]
