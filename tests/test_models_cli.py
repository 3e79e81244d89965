"""`streammon models ...` against real Redis and Kafka: register from a file, list, show,
promote, rollback; idempotent registration; a tampered file is refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from procs import streammon_path
from sklearn.linear_model import LogisticRegression

from streaming.artifacts import dump_model

pytestmark = pytest.mark.integration


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [streammon_path(), *args], env=env, capture_output=True, text=True, timeout=120
    )


def model_file(tmp_path: Path, name: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(200, 3))  # noqa: N806
    y = (X[:, 0] + rng.normal(scale=0.5, size=200) > 0).astype(int)
    path = tmp_path / f"{name}.skops"
    path.write_bytes(dump_model(LogisticRegression().fit(X, y)))
    return path


def test_models_commands(service_env: dict[str, str], tmp_path: Path) -> None:
    env = {**service_env, "STREAMMON_ARTIFACT_DIR": str(tmp_path / "artifacts")}
    assert run(env, "topics", "create").returncode == 0
    first, second = model_file(tmp_path, "a", 1), model_file(tmp_path, "b", 2)

    reg = run(env, "models", "register", "credit", str(first))
    assert reg.returncode == 0, reg.stderr
    assert "v1 champion" in reg.stdout
    again = run(env, "models", "register", "credit", str(first))
    assert again.returncode == 0 and "v1" in again.stdout  # idempotent: same artifact
    assert run(env, "models", "register", "credit", str(second), "--candidate").returncode == 0

    listed = json.loads(run(env, "models", "list", "--json").stdout)
    assert [(v["version"], v["status"]) for v in listed] == [(1, "champion"), (2, "candidate")]
    assert all(len(v["artifact_sha256"]) == 64 and v["announced"] for v in listed)

    assert run(env, "models", "promote", "credit", "2").returncode == 0
    shown = json.loads(run(env, "models", "show", "credit").stdout)
    assert shown["version"] == 2 and shown["status"] == "champion" and shown["parent_version"] == 1

    assert run(env, "models", "rollback", "credit").returncode == 0
    listed = json.loads(run(env, "models", "list", "credit", "--json").stdout)
    assert [(v["version"], v["status"]) for v in listed] == [(1, "champion"), (2, "rolled_back")]

    bad = tmp_path / "bad.skops"
    bad.write_bytes(b"not a skops file")
    refused = run(env, "models", "register", "credit", str(bad))
    assert refused.returncode == 1 and "error" in refused.stderr
    assert run(env, "models", "show", "nobody").returncode == 1
