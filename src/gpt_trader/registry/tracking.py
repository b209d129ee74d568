"""MLflow run setup and provenance: tracking URI, experiments, git commit, data hashes, library versions."""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from gpt_trader.core.fingerprint import hash_files
from gpt_trader.registry.config import RegistryConfig

TRACKED_LIBRARIES = (
    "torch",
    "lightning",
    "stable-baselines3",
    "gymnasium",
    "mlflow",
    "polars",
    "numpy",
    "pandas",
    "scikit-learn",
    "gpt-trader",
)


def tracking_uri(config: RegistryConfig, mlflow_dir: str | Path) -> str:
    """The configured tracking URI, or the embedded SQLite store `<mlflow_dir>/mlflow.db` (absolute)."""
    if config.tracking_uri:
        return config.tracking_uri
    root = Path(mlflow_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def setup_experiment(name: str, config: RegistryConfig, mlflow_dir: str | Path) -> str:
    """Point MLflow at the store and make sure `name` exists with artifacts under `<mlflow_dir>/artifacts`.

    Returns the experiment id. The artifact root is set per experiment because the embedded store has no server.
    """
    import mlflow

    uri = tracking_uri(config, mlflow_dir)
    mlflow.set_tracking_uri(uri)
    # Runs and registered models live in the same store; a registry URI left over from an earlier store in the
    # same process would otherwise send registrations elsewhere.
    mlflow.set_registry_uri(uri)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mlflow.set_experiment(name)
        return str(experiment.experiment_id)
    artifact_location = None
    if config.tracking_uri is None or config.tracking_uri.startswith(("sqlite:", "postgresql")):
        artifact_location = (Path(mlflow_dir).resolve() / "artifacts").as_uri()
    experiment_id = mlflow.create_experiment(name, artifact_location=artifact_location)
    mlflow.set_experiment(name)
    return str(experiment_id)


def git_commit(cwd: str | Path | None = None) -> tuple[str, bool]:
    """(commit sha, working tree dirty) of the project, or ("unknown", False) outside a git checkout."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    return sha, bool(status.strip())


def library_versions(names: Iterable[str] = TRACKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that change results."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def dvc_out_hash(out: str, lock_path: str | Path = "dvc.lock") -> str | None:
    """The md5 DVC recorded for output `out` (e.g. `data/features`) in dvc.lock, if the pipeline ran under DVC."""
    import yaml

    lock = Path(lock_path)
    if not lock.is_file():
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if entry.get("path") == out:
                return str(entry.get("md5"))
    return None


def provenance_tags(data_files: Iterable[str | Path] = (), dvc_out: str | None = None) -> dict[str, Any]:
    """Tags every training run carries: git commit, dirty flag, data hashes and library versions."""
    sha, dirty = git_commit()
    tags: dict[str, Any] = {"git_commit": sha, "git_dirty": str(dirty).lower()}
    files = list(data_files)
    if files:
        tags["data_sha256"] = hash_files(files)
    if dvc_out:
        tags["dvc_data_md5"] = dvc_out_hash(dvc_out) or "not-under-dvc"
    tags.update({f"version.{k}": v for k, v in library_versions().items()})
    return tags


def iso_utc(value: Any) -> str:
    """ISO-8601 UTC string of a numpy datetime64, naive-UTC or aware datetime, or timestamp string."""
    import pandas as pd

    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return str(ts.isoformat())


def run_url(tracking_uri_: str, experiment_id: str, run_id: str, artifact_uri: str) -> str:
    """Where a person can look at a run: the MLflow UI page when tracking is a server, else the run's own
    artifact directory (model, plots, reports) in the local store."""
    if tracking_uri_.startswith(("http://", "https://")):
        return f"{tracking_uri_.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return artifact_uri


def dvc_out_current(out: str, md5: str, cache_dir: str | Path = ".dvc/cache") -> bool:
    """Whether the files now under `out` are exactly those DVC recorded as `md5` (a `.dir` hash) in its cache.

    A retrain that captures data outside `dvc repro` changes the files after dvc.lock was written; the lock's md5
    then no longer names the data a model was trained on, and must not be recorded as if it did.
    """
    import hashlib
    import json

    if not md5.endswith(".dir"):
        return False
    digest = md5.removesuffix(".dir")
    listing = Path(cache_dir) / "files" / "md5" / digest[:2] / (digest[2:] + ".dir")
    if not listing.is_file():
        return False
    entries = json.loads(listing.read_text())
    root = Path(out)
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    if on_disk != {e["relpath"] for e in entries}:
        return False
    # md5 is what DVC records; it identifies files here, it does not protect anything.
    return all(hashlib.md5((root / e["relpath"]).read_bytes()).hexdigest() == e["md5"] for e in entries)


def dvc_data_tag(data_files: Iterable[str | Path], out: str = "data/features") -> str:
    """`dvc_data_md5` of the training data: the md5 dvc.lock records for `out` when the files are that (current)
    output, else `not-under-dvc` (files elsewhere) or `dvc-lock-stale` (changed since the last `dvc repro`).
    """
    root = Path(out).resolve()
    files = [Path(f).resolve() for f in data_files]
    if not files or not all(root in f.parents for f in files):
        return "not-under-dvc"
    md5 = dvc_out_hash(out)
    if md5 is None:
        return "not-under-dvc"
    return md5 if dvc_out_current(out, md5) else "dvc-lock-stale"
