"""``jobs.train`` as users run it: config errors before any Ray work, and a real ``ray job submit``."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from utils import free_port

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("override, key", [("scaling.num_workers=0", "scaling.num_workers"),
                                           ("schedule.max_stepz=3", "schedule.max_stepz"),
                                           ("scaling.cpus_per_worker=lots", "scaling.cpus_per_worker")])
def test_bad_config_fails_before_ray(tmp_path, override, key):
    proc = subprocess.run([sys.executable, "-m", "jobs.train", "--config", "configs/train/tiny_cpu.yaml", override],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI":
                               f"sqlite:///{tmp_path / 'mlflow.db'}"})
    assert proc.returncode == 2, proc.stderr
    assert f"error: {key}:" in proc.stderr
    assert "Ray" not in proc.stdout + proc.stderr  # nothing started
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run either


def cluster_script(port: int, dashboard_port: int, entrypoint: str, log: Path, temp_dir: str) -> str:
    """Bash: start a loopback head node (its own ``--temp-dir``) and submit the job. No ``ray stop``: it
    would end every Ray on the machine; :func:`stop_cluster` ends this cluster alone.

    Every port Ray would otherwise take by default (client server 10001, dashboard agent 52365, ...) is a
    free one, so the cluster can coexist with other local Ray instances (e.g. the ``ray_local`` fixture).
    The submission is retried while the fresh head's job agent is not up yet ("No available agent").
    """
    ports = " ".join(f"--{name} {free_port()}" for name in (
        "ray-client-server-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
        "runtime-env-agent-port", "metrics-export-port", "node-manager-port", "object-manager-port"))
    return f"""
set -uo pipefail
ray start --head --node-ip-address 127.0.0.1 --port {port} --dashboard-host 127.0.0.1 \\
    --dashboard-port {dashboard_port} --num-cpus 2 --disable-usage-stats --temp-dir {temp_dir} {ports} \\
    >/dev/null || exit 1
for attempt in $(seq 1 20); do
    if ray job submit --address http://127.0.0.1:{dashboard_port} --working-dir . -- {entrypoint} >{log} 2>&1; then
        cat {log}; exit 0
    fi
    cat {log}
    grep -q "No available agent" {log} || exit 1
    sleep 3
done
exit 1
"""


def cluster_processes(pgid: int, temp_dir: str) -> list:
    """Processes of the cluster started by the script: its process group, every process whose command line
    names the cluster's own temp dir (GCS, raylet, dashboard, agents), and their descendants (workers)."""
    import psutil

    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if os.getpgid(p.pid) == pgid or any(temp_dir in a for a in p.info["cmdline"] or ()):
                found[p.pid] = p
                found.update({c.pid: c for c in p.children(recursive=True)})
        except (psutil.Error, ProcessLookupError):
            pass
    return list(found.values())


def stop_cluster(pgid: int, temp_dir: str) -> None:
    """End only the cluster of :func:`cluster_script` (SIGTERM, then SIGKILL); fail if any of it survives."""
    import psutil

    procs = cluster_processes(pgid, temp_dir)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    left = [p.pid for p in cluster_processes(pgid, temp_dir) if p.is_running()]
    assert not left, f"processes of the test's Ray cluster survived: {left}"


@pytest.mark.slow
def test_ray_job_submit_trains_and_registers(tmp_path, mlflow_sqlite):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    tracking_uri = mlflow_sqlite  # absolute sqlite path, passed to the job as a config override
    entrypoint = (f"python -m jobs.train --config configs/train/tiny_cpu.yaml loader.source=synthetic "
                  f"loader.num_synthetic=8 schedule.max_steps=4 schedule.val_every=4 schedule.checkpoint_every=2 "
                  f"run.name=submitted run.storage_path={tmp_path / 'ray_results'} "
                  f"tracking.uri={tracking_uri} tracking.register_name=submitted-codec tracking.alias=smoke")
    temp_dir = tempfile.mkdtemp(prefix="ray-job-test-")  # short: Ray's socket paths live under it
    script = cluster_script(free_port(), free_port(), entrypoint, tmp_path / "submit.log", temp_dir)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HF_HUB_OFFLINE": "1", "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
           # Token auth on our own throwaway cluster: the CLI and the cluster share this token.
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    # A new session: the cluster's processes are found by process group and temp dir and stopped alone.
    proc = subprocess.Popen(["bash", "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
    finally:
        proc.kill()
        stop_cluster(proc.pid, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert proc.returncode == 0, out[-5000:]
    assert "succeeded" in out, out[-5000:]

    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    (version,) = client.search_model_versions("name='submitted-codec'")
    assert client.get_model_version_by_alias("submitted-codec", "smoke").version == version.version
    run = client.get_run(version.run_id)
    assert run.info.run_name == "submitted" and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_g")] == [1, 2, 3, 4]
    local = Path(download_artifacts(f"models:/submitted-codec/{version.version}", tracking_uri=tracking_uri,
                                    dst_path=str(tmp_path / "model")))
    assert {"model.safetensors", "config.yaml", "teacher.safetensors"} <= {p.name for p in local.iterdir()}
