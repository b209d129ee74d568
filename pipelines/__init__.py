"""DVC stage entry points for stages that need more than one CLI call.

Every stage in `dvc.yaml` today is a single `gpt-trader ...` command over `gpt_trader.*.stages`, so nothing lives
here yet: a stage gets a thin typed `main()` module in this package only when a CLI call cannot express it.
"""
