"""End-to-end tokenization job: MLflow-registered model, whole tracks of mixed rates/channels, codes equal
to in-process ``Codec.encode``, corrupt tracks skipped, kill + resume byte-identical, and ``s3://`` I/O.

The test codec is the tiny preset saved with short inference windows (2 s chunks, 0.4 s context) so that
short tracks are cheap on CPU; the windowing logic is the same as with the default 10 s chunks.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from utils import kill_session, music_clip

from pipelines.common import shard_io as tio
from pipelines.tokenize.config import load_tokenize_config
from pipelines.tokenize.driver import run_tokenize

REPO = Path(__file__).resolve().parents[2]


def frames_of(num_samples: int, sample_rate: int) -> int:
    """ceil(duration * 25) in exact integer arithmetic."""
    return -(-num_samples * 25 // sample_rate)


def audio_bytes(seconds: float, rate: int, channels: int, fmt: str, seed: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, music_clip(seconds, rate, channels, seed=seed), rate, format=fmt.upper())
    return buf.getvalue()


def write_shards(root: Path, layout: list[dict[str, tuple]]) -> dict[str, bytes]:
    """layout: one dict per shard, key -> (seconds, rate, channels, fmt) or raw bytes (a corrupt member
    stored as KEY.flac). Returns key -> encoded audio bytes."""
    root.mkdir(parents=True, exist_ok=True)
    audio = {}
    for i, shard in enumerate(layout):
        members = {}
        for j, (key, spec) in enumerate(sorted(shard.items())):
            if isinstance(spec, bytes):
                members[f"{key}.flac"] = spec
                continue
            seconds, rate, channels, fmt = spec
            audio[key] = audio_bytes(seconds, rate, channels, fmt, seed=100 * i + j)
            members[f"{key}.{fmt}"] = audio[key]
            members[f"{key}.json"] = json.dumps({"title": key}).encode()
        (root / f"corpus-{i:06d}.tar").write_bytes(tio.tar_bytes(members))
    return audio


def read_token_shard(blob: bytes) -> dict[str, dict]:
    out: dict[str, dict] = {}
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        for m in tar.getmembers():
            key, suffix = m.name.split(".", 1)
            data = tar.extractfile(m).read()
            out.setdefault(key, {})[suffix] = np.load(io.BytesIO(data)) if suffix == "codes.npy" else json.loads(data)
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from codec import Codec

    codec = Codec.from_pretrained("tiny").configure(chunk_seconds=2.0, context_seconds=0.4, window_seconds=8.0)
    return codec.save_pretrained(tmp_path_factory.mktemp("tiny-codec"))


@pytest.fixture(scope="module")
def reference_codec(tiny_dir):
    import torch

    from codec import Codec

    torch.set_num_threads(2)
    return Codec.from_pretrained(str(tiny_dir))


def reference_codes(codec, encoded: bytes) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(encoded), dtype="float32", always_2d=True)
    return codec.encode(audio.T, sample_rate=rate)[0].numpy()


@pytest.mark.slow
def test_registered_model_whole_tracks_mixed_rates(ray_local, mlflow_sqlite, tiny_dir, reference_codec, tmp_path):
    from mlflow import MlflowClient

    from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run

    run_id = get_or_create_run(mlflow_sqlite, "training", "tiny-train",
                               artifact_location=default_artifact_location(mlflow_sqlite))
    version_uri = RunLogger(mlflow_sqlite, run_id).log_model_dir(tiny_dir, registered_name="codec-tiny", alias="prod")
    assert version_uri == "models:/codec-tiny/1"

    layout = [
        {"short": (3.0, 8000, 1, "wav"), "mid": (20.0, 44100, 2, "flac"), "broken": b"fLaC\x00\x00garbage" * 9},
        {"long": (180.0, 8000, 1, "flac"), "stereo": (4.0, 44100, 2, "ogg")},
    ]
    encoded = write_shards(tmp_path / "in", layout)
    cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        "model=models:/codec-tiny@prod", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}",
        "progress=false", "compute.torch_threads=2", "compute.batch_seconds=60"])
    lines: list[str] = []
    result = run_tokenize(cfg, log=lines.append)
    assert result.ok and result.shards_run == 2 and result.tracks == 4
    assert lines[-1].startswith("Done: 2/2 shard(s)")

    tracks: dict[str, dict] = {}
    for shard in ("corpus-000000.tar", "corpus-000001.tar"):
        for key, t in read_token_shard((tmp_path / "out" / shard).read_bytes()).items():
            assert key not in tracks, f"{key} tokenized twice"
            tracks[key] = t
    assert sorted(tracks) == ["long", "mid", "short", "stereo"]
    for key, t in tracks.items():
        info = sf.info(io.BytesIO(encoded[key]))
        meta, codes = t["json"], t["codes.npy"]
        assert codes.dtype == np.int16 and codes.shape == (8, frames_of(info.frames, info.samplerate)), key
        assert (meta["frames"], meta["sample_rate"], meta["channels"]) == (
            codes.shape[1], info.samplerate, info.channels)
        assert meta["duration"] == pytest.approx(info.frames / info.samplerate)
        assert meta["model"] == {"uri": "models:/codec-tiny@prod", "load_uri": "models:/codec-tiny/1",
                                 "name": "codec-tiny", "version": "1"}
        assert meta["config_hash"] == tracks["long"]["json"]["config_hash"] and len(meta["config_hash"]) == 16
        np.testing.assert_array_equal(codes, reference_codes(reference_codec, encoded[key]), err_msg=key)
    assert tracks["long"]["codes.npy"].shape[1] == 4500

    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert (stats["tracks"], stats["shards"], stats["complete"]) == (4, 2, True)
    assert stats["tokens"] == 8 * sum(t["codes.npy"].shape[1] for t in tracks.values())
    assert stats["hours"] == pytest.approx(207 / 3600, abs=1e-5)
    assert [(s["shard"], s["key"], s["reason"].split(":")[0]) for s in stats["skipped"]] == [
        ("corpus-000000.tar", "broken", "undecodable")]
    assert len(stats["codebook"]) == 8 and all(1 <= c["perplexity"] <= 1024 for c in stats["codebook"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["name"] for s in manifest["shards"]] == ["corpus-000000.tar", "corpus-000001.tar"]
    assert manifest["model"]["version"] == "1" and manifest["config_hash"] == tracks["long"]["json"]["config_hash"]

    client = MlflowClient(mlflow_sqlite)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "tokenization"
    assert run.data.tags["model.version"] == "1" and run.data.tags["model.name"] == "codec-tiny"
    assert run.data.metrics["tracks"] == 4 and run.data.metrics["skipped_tracks"] == 1
    assert run.data.params["model"] == "models:/codec-tiny@prod"
    logged = client.get_model_version("codec-tiny", "1").tags["logged_model_id"]  # the model behind the version
    assert logged.startswith("m-") and [m.model_id for m in run.inputs.model_inputs] == [logged]

    again: list[str] = []
    assert run_tokenize(cfg, log=again.append).nothing_to_do
    assert again[-1].startswith("Nothing to do")


@pytest.mark.slow
def test_tokenizer_actors_start_with_the_configured_niceness_and_malloc(ray_local, tiny_dir, tmp_path):
    """Ray starts its workers at nice 15; the tokenize actors take ``compute.niceness`` (default 0) instead,
    and start with glibc malloc keeping freed memory (``codec.allocator.malloc_env``) unless
    ``compute.tune_malloc=false``."""
    import threading

    import psutil

    from codec.allocator import malloc_env

    write_shards(tmp_path / "in", [{"a": (3.0, 24000, 1, "flac")}])
    seen: dict[int, tuple[int, dict[str, str]]] = {}
    stop = threading.Event()

    def watch() -> None:  # the actor processes (``ray::MapWorker(MapBatches(ShardTokenizer))``): nice, start env
        while not stop.wait(0.05):
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "ShardTokenizer" in " ".join(proc.cmdline()):
                        env = proc.environ()
                        seen[proc.pid] = (proc.nice(), {k: env[k] for k in malloc_env() if k in env})
                except psutil.Error:
                    pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        earlier: set[int] = set()
        for overrides, expected in (([], (0, malloc_env())),  # the shipped defaults
                                    (["compute.niceness=7", "compute.tune_malloc=false"], (7, {}))):
            cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
                f"model={tiny_dir}", f"input={tmp_path / 'in'}", f"output={tmp_path / f'out{len(overrides)}'}",
                "progress=false", "tracking.enabled=false", *overrides])
            assert run_tokenize(cfg, log=lambda _: None).ok
            this_run = [seen[pid] for pid in seen if pid not in earlier]
            assert this_run and all(got == expected for got in this_run), this_run
            earlier |= set(seen)
    finally:
        stop.set()
        watcher.join()


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    # RAY_ADDRESS=local: the job's ray.init() starts its own embedded Ray even if another `ray start`
    # cluster runs on this machine (ray.init() with no address would join that one).
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), RAY_ADDRESS="local")
    for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(k, None)
    return env


def kill_after_first_shard(args: list[str], cwd: Path, env: dict[str, str], out: Path) -> int:
    """Start the job, SIGKILL it (driver and Ray processes) once a shard is done; return the done shards it left."""
    done_dir = out / tio.DONE_DIR
    proc = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not (done_dir.is_dir() and any(done_dir.glob("*.json"))):
            assert proc.poll() is None, "job exited before finishing a shard"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        kill_session(proc)  # nothing finishes a shard after this
    return len([p for p in done_dir.glob("*.json") if not p.name.startswith(".")])  # a torn temp marker is not done


@pytest.mark.slow
def test_killed_run_resumes_byte_identical(ray_local, tiny_dir, tmp_path):
    layout = [{f"t{i}a": (4.0, 24000, 1, "flac"), f"t{i}b": (3.0, 22050, 2, "wav")} for i in range(3)]
    write_shards(tmp_path / "in", layout)
    args = [sys.executable, "-m", "jobs.tokenize", "--config", str(REPO / "configs/tokenize/default.yaml"),
            f"model={tiny_dir}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "progress=false",
            "compute.torch_threads=2", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    killed_at = kill_after_first_shard(args, tmp_path, job_env(), tmp_path / "out")
    assert 1 <= killed_at < 3, "kill should land between shards"

    resumed = subprocess.run(args, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Done:" in resumed.stdout and f"({killed_at} already done)" in resumed.stdout

    clean = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        f"model={tiny_dir}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'clean'}", "progress=false",
        "compute.torch_threads=2", "tracking.enabled=false"])
    assert run_tokenize(clean, log=lambda _: None).ok
    resumed_files = {k: v for k, v in tree_bytes(tmp_path / "out").items() if not k.startswith(".")}
    assert resumed_files == tree_bytes(tmp_path / "clean")
    assert sorted(resumed_files) == [
        "_done/corpus-000000.json", "_done/corpus-000001.json", "_done/corpus-000002.json", "corpus-000000.tar",
        "corpus-000001.tar", "corpus-000002.tar", "manifest.json", "stats.json"]

    before = {p: (tmp_path / "out" / p).stat().st_mtime_ns for p in tree_bytes(tmp_path / "out")}
    third = subprocess.run(args, cwd=tmp_path, env=job_env(), capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "Nothing to do: all 3 shard(s)" in third.stdout
    assert {p: (tmp_path / "out" / p).stat().st_mtime_ns for p in tree_bytes(tmp_path / "out")} == before


@pytest.mark.slow
def test_s3_input_and_output(ray_local, moto_s3, s3_bucket, mlflow_sqlite, tiny_dir, reference_codec, tmp_path):
    import boto3
    from mlflow import MlflowClient

    encoded = write_shards(tmp_path / "in", [{"a": (2.0, 44100, 2, "flac")}, {"b": (3.0, 16000, 1, "wav")}])
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    for p in sorted((tmp_path / "in").iterdir()):
        s3.upload_file(str(p), s3_bucket, f"corpus/{p.name}")
    overrides = [f"model={tiny_dir}", f"input=s3://{s3_bucket}/corpus/", f"output=s3://{s3_bucket}/tokens",
                 "progress=false", "compute.torch_threads=2",
                 f"storage.key={os.environ['AWS_ACCESS_KEY_ID']}", f"storage.secret={os.environ['AWS_SECRET_ACCESS_KEY']}"]
    cfg = load_tokenize_config(None, overrides)
    result = run_tokenize(cfg, log=lambda _: None)
    assert result.ok and result.tracks == 2

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="tokens/")["Contents"])
    assert keys == ["tokens/_done/corpus-000000.json", "tokens/_done/corpus-000001.json", "tokens/corpus-000000.tar",
                    "tokens/corpus-000001.tar", "tokens/manifest.json", "tokens/stats.json"]
    for key, shard in (("a", "corpus-000000.tar"), ("b", "corpus-000001.tar")):
        blob = s3.get_object(Bucket=s3_bucket, Key=f"tokens/{shard}")["Body"].read()
        codes = read_token_shard(blob)[key]["codes.npy"]
        np.testing.assert_array_equal(codes, reference_codes(reference_codec, encoded[key]))
    stats = json.loads(s3.get_object(Bucket=s3_bucket, Key="tokens/stats.json")["Body"].read())
    assert (stats["tracks"], stats["complete"]) == (2, True)

    params = MlflowClient(mlflow_sqlite).get_run(result.run_id).data.params
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in str(params) and os.environ["AWS_ACCESS_KEY_ID"] not in str(params)
    assert run_tokenize(cfg, log=lambda _: None).nothing_to_do


@pytest.mark.slow
def test_imported_release_tokenizes(ray_local, tmp_path):
    """The tokenization job on a directory written by ``import-muq-xcodec`` (reference mode, imported MuQ):
    its codes equal ``Codec.from_pretrained(OUT_DIR).encode``, including a track longer than one 10 s chunk."""
    from original_checkpoint import write_original_checkpoint

    from codec import Codec
    from codec.convert import import_muq_xcodec

    ckpt, muq_json, _, _ = write_original_checkpoint(tmp_path / "orig")
    import_muq_xcodec(ckpt, tmp_path / "imported", muq_config=muq_json)
    encoded = write_shards(tmp_path / "in", [{"stereo": (3.0, 44100, 2, "flac"), "long": (12.5, 24000, 1, "wav")}])
    cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        f"model={tmp_path / 'imported'}", f"input={tmp_path / 'in'}", f"output={tmp_path / 'out'}", "progress=false",
        "compute.torch_threads=2", "tracking.enabled=false"])
    assert run_tokenize(cfg, log=lambda _: None).ok

    codec = Codec.from_pretrained(tmp_path / "imported")
    assert codec.config.inference.mode == "reference" and codec.config.teacher.source == "imported"
    tracks = read_token_shard((tmp_path / "out" / "corpus-000000.tar").read_bytes())
    assert sorted(tracks) == ["long", "stereo"]
    for key, t in tracks.items():
        np.testing.assert_array_equal(t["codes.npy"], reference_codes(codec, encoded[key]), err_msg=key)
    assert tracks["long"]["codes.npy"].shape == (8, 313)
