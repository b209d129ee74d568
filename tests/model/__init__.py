"""Behavioural model tests: no look-ahead, causality, invariances, the seed examples."""
