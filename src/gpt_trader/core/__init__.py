"""Shared vocabulary with no I/O: types, schemas, clocks, errors and the one file-writing primitive."""
