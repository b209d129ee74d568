"""MLflow: run tracking, provenance, registration and champion/challenger promotion."""
