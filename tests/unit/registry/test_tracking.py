from __future__ import annotations

from pathlib import Path

from gpt_trader.core.fingerprint import hash_files
from gpt_trader.registry.config import RegistryConfig
from gpt_trader.registry.tracking import dvc_out_hash, provenance_tags, run_url, setup_experiment, tracking_uri


def test_tracking_uri_defaults_to_embedded_sqlite(tmp_path):
    assert tracking_uri(RegistryConfig(), tmp_path / "ml") == f"sqlite:///{(tmp_path / 'ml').resolve()}/mlflow.db"
    assert tracking_uri(RegistryConfig(tracking_uri="http://127.0.0.1:5000"), tmp_path) == "http://127.0.0.1:5000"


def test_run_url_ui_page_on_a_server_else_the_run_artifact_directory():
    local = "file:///srv/mlflow/artifacts/1/abc/artifacts"
    assert run_url("http://127.0.0.1:5000/", "1", "abc", local) == "http://127.0.0.1:5000/#/experiments/1/runs/abc"
    assert run_url("sqlite:////srv/mlflow/mlflow.db", "1", "abc", local) == local
    assert run_url("postgresql+psycopg://postgres@127.0.0.1:5432/mlflow", "1", "abc", local) == local


def test_setup_experiment_real_store_artifacts_under_mlflow_dir(tmp_path):
    import mlflow

    first = setup_experiment("exp-a", RegistryConfig(), tmp_path / "ml")
    assert setup_experiment("exp-a", RegistryConfig(), tmp_path / "ml") == first
    with mlflow.start_run() as run:
        mlflow.log_text("hello", "note.txt")
    assert run.info.artifact_uri.startswith((tmp_path / "ml" / "artifacts").resolve().as_uri())
    assert (tmp_path / "ml" / "mlflow.db").exists()


def test_hash_files_changes_with_content_params_and_missing_files(tmp_path):
    a = tmp_path / "a.bin"
    a.write_bytes(b"one")
    before = hash_files([a])
    assert hash_files([a]) == before
    assert hash_files([a], {"window": 5}) != before
    a.write_bytes(b"two")
    assert hash_files([a]) != before
    a.unlink()
    assert hash_files([a]) != before


def test_dvc_out_hash_reads_lock(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  features:\n    outs:\n    - path: data/features\n      md5: abc.dir\n")
    assert dvc_out_hash("data/features", lock) == "abc.dir"
    assert dvc_out_hash("data/other", lock) is None
    assert dvc_out_hash("data/features", tmp_path / "none.lock") is None


def test_provenance_tags_carry_commit_and_versions(tmp_path):
    f = tmp_path / "x"
    f.write_text("x")
    tags = provenance_tags([f], dvc_out="data/features")
    assert len(tags["git_commit"]) in (7, 40) or tags["git_commit"] == "unknown"
    assert tags["version.torch"].startswith("2.13.0")
    assert tags["data_sha256"] == hash_files([Path(f)])
