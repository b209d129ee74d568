"""GPT-Trader."""
