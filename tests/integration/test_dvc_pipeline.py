"""`dvc repro features` on a fresh copy of the project reproduces capture -> validate -> features."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("GPT_TRADER_CONFIG", None)
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    repo = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo / name)
    for name in ("config", "src", ".dvc"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
    sh(["git", "init", "-q"], repo)
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-qm", "init"], repo)
    # The data stages only: training stages are exercised by their own (tiny-config) tests.
    sh([str(BIN / "dvc"), "repro", "features"], repo)
    return repo


def test_dvc_repro_fresh_clone_produces_all_stage_outputs(project):
    for key in ("SPX_1d", "IXIC_1d", "GOOGL_1d"):
        for stage in ("raw", "validated", "features"):
            assert (project / "data" / stage / "bundled" / f"{key}.parquet").exists(), (stage, key)
    assert (project / "reports" / "data_docs" / "index.html").exists()
    features = pl.read_parquet(project / "data" / "features" / "bundled" / "SPX_1d.parquet")
    assert features.height > 4000
    assert (project / "dvc.lock").exists()


def test_dvc_metrics_show_reports_validation_and_data(project):
    out = json.loads(sh([str(BIN / "dvc"), "metrics", "show", "--json"], project).stdout)
    files = out[""]["data"]
    validation = files["metrics/validation.json"]["data"]
    assert validation["datasets"]["bundled/SPX_1d"]["success"] in (True, 1)
    assert validation["totals"] == {"datasets": 4, "passed": 4, "failed": 0}
    assert files["metrics/capture.json"]["data"]["bundled/EURUSD_1h"]["rows"] == 6225
    assert "bundled/GOOGL_1d" in files["metrics/features.json"]["data"]


def test_dvc_repro_second_run_is_up_to_date(project):
    out = sh([str(BIN / "dvc"), "repro", "features"], project).stdout
    assert "up to date" in out.lower()
    status = sh([str(BIN / "dvc"), "status", "features"], project).stdout
    assert "changed" not in status.lower()
