"""Prefect flows: thin shells over the library, one file per flow (`<verb>_flow` in `flows/<verb>.py`)."""
