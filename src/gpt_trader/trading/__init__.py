"""Trading: the one cost model, signals, risk, sizing, portfolio and execution."""
