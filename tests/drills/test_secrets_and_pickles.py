"""Drill 5: secrets never leak into MLflow, stdout/stderr or Ray logs; no code path unpickles a checkpoint.

* Source scan: ``torch.load(`` without ``weights_only=True``, ``pickle.load(s)``, ``cloudpickle.load(s)``
  are forbidden in codec/, pipelines/, jobs/ except the one documented ``--trust-checkpoint`` call.
* Poisoned pickles (``__reduce__`` writes a marker file) as ``model.safetensors``, ``teacher.safetensors``,
  ``.pt``/``.ckpt``/``.bin`` files, an MLflow model artifact, a train-state checkpoint and an
  ``import-muq-xcodec`` input: loading fails cleanly and the marker never appears.
* A tokenize run on S3 with distinctive fake credentials (config ``storage.secret``, env key id) and an
  ``MLFLOW_TRACKING_TOKEN``: none of them is in the MLflow db, artifacts, captured output or Ray logs.
"""

from __future__ import annotations

import pickle
import re
import shutil
from pathlib import Path

import pytest
from drill_utils import REPO, write_shards

SCANNED = ("codec", "pipelines", "jobs")
FORBIDDEN = re.compile(r"\b(pickle\.loads?|cloudpickle\.loads?|dill\.loads?|torch\.load|joblib\.load)\s*\(")
# The only allowed full unpickle: import-muq-xcodec --trust-checkpoint (documented UNSAFE), by exact code.
ALLOWED = {("codec/convert.py", 'ckpt = torch.load(path, map_location="cpu", weights_only=False)')}


@pytest.mark.slow
@pytest.mark.drill
def test_no_unpickling_in_package_source():
    hits = []
    for pkg in SCANNED:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            for i, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                m = FORBIDDEN.search(code)
                if not m:
                    continue
                if m.group(1) == "torch.load" and "weights_only=True" in code:
                    continue
                if (rel, code.strip()) in ALLOWED:
                    ctx = path.read_text().splitlines()[max(0, i - 8):i]
                    assert any("if not trust" in c for c in ctx), "the trusted load must sit behind `trust`"
                    continue
                hits.append(f"{rel}:{i}: {line.strip()}")
    assert not hits, "unpickling code paths:\n" + "\n".join(hits)


class Poison:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def poison_checkpoint(src: Path, dst: Path, marker: Path) -> Path:
    """A copy of a good checkpoint dir whose weights files are pickles, plus pickled .pt/.ckpt/.bin files."""
    import torch

    shutil.copytree(src, dst)
    blob = pickle.dumps(Poison(marker))
    for name in ("model.safetensors", "teacher.safetensors", "pytorch_model.bin"):
        (dst / name).write_bytes(blob)
    torch.save({"state_dict": Poison(marker)}, dst / "model.pt")
    torch.save({"state_dict": Poison(marker)}, dst / "last.ckpt")
    return dst


@pytest.mark.slow
@pytest.mark.drill
def test_poisoned_pickles_are_never_executed(drill_tiny_dir, tmp_path, mlflow_sqlite):
    from codec import Codec
    from codec.__main__ import main as codec_cli
    from pipelines.common.tracking import RunLogger, default_artifact_location, get_or_create_run
    from pipelines.train.checkpoint import load_tree, load_weights

    marker = tmp_path / "PWNED"
    bad = poison_checkpoint(Path(drill_tiny_dir), tmp_path / "poisoned", marker)
    assert pickle.loads(pickle.dumps(1)) == 1 and not marker.exists()

    # 1. Codec.from_pretrained on a checkpoint dir and on the same dir logged as an MLflow model.
    with pytest.raises(Exception) as e1:
        Codec.from_pretrained(str(bad))
    run_id = get_or_create_run(mlflow_sqlite, "poison", "poison",
                               artifact_location=default_artifact_location(mlflow_sqlite))
    uri = RunLogger(mlflow_sqlite, run_id).log_model_dir(bad, registered_name="poisoned", alias="prod")
    with pytest.raises(Exception) as e2:
        Codec.from_pretrained("models:/poisoned@prod")
    # 2. The train resume path: a checkpoint's train state / weights files replaced by pickles.
    state_dir = tmp_path / "ckpt"
    state_dir.mkdir()
    (state_dir / "train_state.safetensors").write_bytes(pickle.dumps(Poison(marker)))
    (state_dir / "train_state.json").write_text("{}")
    with pytest.raises(Exception) as e3:
        load_tree(state_dir, "train_state")
    with pytest.raises(Exception) as e4:
        load_weights(__import__("torch").nn.Linear(1, 1), bad / "model.safetensors")
    # 3. import-muq-xcodec without --trust-checkpoint, on a .ckpt and a .pt holding a pickled object.
    codes = [codec_cli(["import-muq-xcodec", str(bad / f), str(tmp_path / f"out-{f}")]) for f in ("last.ckpt",
                                                                                                   "model.pt")]
    assert not marker.exists(), "a poisoned pickle was executed"
    assert codes == [1, 1]
    print(f"rejected: from_pretrained dir ({type(e1.value).__name__}), {uri} ({type(e2.value).__name__}), "
          f"train state ({type(e3.value).__name__}), weights ({type(e4.value).__name__}), "
          f"import-muq-xcodec .ckpt/.pt (exit {codes}); marker absent")


SECRET_CFG = "drillSECRETcfg9f3a7c"
KEY_ENV = "drillKEYIDenv51e2b8"
TOKEN_ENV = "drillMLFLOWTOKENd41c6e"


def grep_tree(root: Path, needles: tuple[str, ...]) -> list[str]:
    found = []
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            try:
                data = p.read_bytes()
            except OSError:
                continue
            found += [f"{p}: {n}" for n in needles if n.encode() in data]
    return found


@pytest.mark.slow
@pytest.mark.drill
def test_secrets_never_logged(ray_local, moto_s3, s3_bucket, mlflow_sqlite, drill_tiny_dir, tmp_path, monkeypatch,
                              capfd):
    import boto3
    import ray
    from mlflow import MlflowClient

    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    write_shards(tmp_path / "in", [{"a": (2.0, 16000, 1, "flac")}, {"b": (1.5, 22050, 2, "wav")}])
    s3 = boto3.client("s3", endpoint_url=moto_s3)
    for p in sorted((tmp_path / "in").iterdir()):
        s3.upload_file(str(p), s3_bucket, f"corpus/{p.name}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ENV)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "drillSECRETenv-unused")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN_ENV)
    cfg = load_tokenize_config(REPO / "configs/tokenize/default.yaml", [
        f"model={drill_tiny_dir}", f"input=s3://{s3_bucket}/corpus/", f"output=s3://{s3_bucket}/tokens",
        "progress=false", "compute.torch_threads=1", f"storage.secret={SECRET_CFG}",
        f"tracking.uri={mlflow_sqlite}"])
    result = run_tokenize(cfg)
    assert result.ok and result.tracks == 2
    out, err = capfd.readouterr()
    needles = (SECRET_CFG, KEY_ENV, TOKEN_ENV, "drillSECRETenv-unused")

    leaks = [f"stdout/stderr: {n}" for n in needles if n in out + err]
    db = Path(mlflow_sqlite.removeprefix("sqlite:///"))
    leaks += grep_tree(db.parent, needles)  # the sqlite db and the artifact store beside it
    run = MlflowClient(mlflow_sqlite).get_run(result.run_id)
    leaks += [f"mlflow run: {n}" for n in needles if n in str(run.data.params) + str(run.data.tags)]
    session = Path(ray._private.worker.global_worker.node.get_session_dir_path())
    leaks += grep_tree(session / "logs", needles)
    latest = Path("/tmp/ray/session_latest/logs")
    if latest.resolve() != (session / "logs").resolve() and latest.is_dir():
        leaks += grep_tree(latest, needles)
    for obj in s3.list_objects_v2(Bucket=s3_bucket, Prefix="tokens/")["Contents"]:
        body = s3.get_object(Bucket=s3_bucket, Key=obj["Key"])["Body"].read()
        leaks += [f"s3://{s3_bucket}/{obj['Key']}: {n}" for n in needles if n.encode() in body]
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks)
    print(f"secrets checked in {len(run.data.params)} params, {len(run.data.tags)} tags, db + artifacts, "
          f"captured output, Ray logs {session / 'logs'}, output objects: 0 leaks")
