#!/usr/bin/env bash
# Start the Prefect server and the MLflow UI on loopback (idempotent) and print their URLs.
# Embedded default: SQLite for both. Set PREFECT_SERVER_DATABASE_CONNECTION_URL / MLFLOW_BACKEND_STORE_URI
# (e.g. postgresql+asyncpg://... and postgresql+psycopg://...) to use PostgreSQL instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFECT_PORT=${PREFECT_PORT:-4200}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
mkdir -p .prefect mlflow/artifacts
export PREFECT_HOME=${PREFECT_HOME:-$PWD/.prefect}

if ! curl -fs "http://127.0.0.1:${PREFECT_PORT}/api/health" >/dev/null 2>&1; then
  nohup .venv/bin/prefect server start --host 127.0.0.1 --port "$PREFECT_PORT" >.prefect/server.log 2>&1 &
  echo $! >.prefect/server.pid
fi
if ! curl -fs "http://127.0.0.1:${MLFLOW_PORT}/health" >/dev/null 2>&1; then
  nohup .venv/bin/mlflow server \
    --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$PWD/mlflow/mlflow.db}" \
    --default-artifact-root "$PWD/mlflow/artifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 >mlflow/server.log 2>&1 &
  echo $! >mlflow/server.pid
fi
for _ in $(seq 1 90); do
  if curl -fs "http://127.0.0.1:${PREFECT_PORT}/api/health" >/dev/null 2>&1 \
    && curl -fs "http://127.0.0.1:${MLFLOW_PORT}/health" >/dev/null 2>&1; then
    echo "Prefect UI: http://127.0.0.1:${PREFECT_PORT}   (PREFECT_API_URL=http://127.0.0.1:${PREFECT_PORT}/api)"
    echo "MLflow UI:  http://127.0.0.1:${MLFLOW_PORT}"
    echo "stop with: make ui-stop"
    exit 0
  fi
  sleep 1
done
echo "servers did not become healthy; see .prefect/server.log and mlflow/server.log" >&2
exit 1
