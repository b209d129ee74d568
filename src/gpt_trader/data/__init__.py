"""Market data: sources, the parquet store, the validation gate and features."""
