"""Serving: champion models from the registry, hot swap, and incremental live features."""
