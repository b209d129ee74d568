"""Test support: local servers that speak provider wire formats on loopback."""
