"""End-to-end training on Ray Train with real MLflow: 2 CPU workers, tiny codec, generated music shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from utils import music_clip, write_corpus

from pipelines.train.config import load_train_config

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
TINY = REPO / "configs" / "train" / "tiny_cpu.yaml"


@pytest.fixture(scope="module")
def music_shards(tmp_path_factory, ray_local) -> str:
    """8 seeded music-like tracks (mixed formats / rates) prepared into WebDataset shards."""
    from pipelines.prepare.config import load_prepare_config
    from pipelines.prepare.driver import run_prepare

    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root / "music", num_tracks=8, seconds=(4.0, 8.0), seed=0)
    cfg = load_prepare_config({"inputs": [str(root / "music")], "output": str(root / "shards"),
                               "max_samples_per_shard": 4, "num_cpus": 0.5, "batch_size": 2, "progress": False})
    assert run_prepare(cfg)["num_samples"] == 8
    return str(root / "shards")


def tiny_config(shards: str, tmp_path: Path, tracking_uri: str, name: str, *overrides: str):
    return load_train_config(TINY, [
        f"data.shards=[{shards}]", f"run.storage_path={tmp_path / 'ray_results'}", f"run.name={name}",
        f"tracking.uri={tracking_uri}", "tracking.experiment=test-train", "tracking.register_name=test-codec",
        *overrides])


def steps_of(client, run_id: str, key: str) -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.timestamp, m.step))]


def test_train_logs_registers_and_loads(music_shards, tmp_path, mlflow_sqlite):
    from mlflow import MlflowClient

    from codec.inference import Codec
    from pipelines.train.driver import run_training

    cfg = tiny_config(music_shards, tmp_path, mlflow_sqlite, "e2e", "schedule.max_steps=30",
                      "schedule.val_every=15", "schedule.checkpoint_every=10")
    result = run_training(cfg)

    c = MlflowClient(mlflow_sqlite)
    run = c.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["scaling.num_workers"] == "2" and params["codec.teacher.source"] == "random"
    assert params["data.storage.secret"] == "null"
    assert steps_of(c, result.run_id, "train/loss_g") == list(range(1, 31))
    assert steps_of(c, result.run_id, "train/lr")[-1] == 30
    for q in (1, 2, 4, 8):
        assert steps_of(c, result.run_id, f"val/mel_nq{q}") == [15, 30]
        identification = c.get_metric_history(result.run_id, f"val/identification_nq{q}")[-1].value
        assert 0.0 <= identification <= 1.0
    for k in range(1, 9):
        usage = c.get_metric_history(result.run_id, f"val/usage_l{k}")[-1].value
        assert 0.0 < usage <= 1.0
        assert c.get_metric_history(result.run_id, f"val/perplexity_l{k}")[-1].value >= 1.0
    assert steps_of(c, result.run_id, "val/constant_codes_mel") == [15, 30]
    assert steps_of(c, result.run_id, "val/collapsed_layers") == [15, 30]
    assert run.data.tags["system.torch"]
    samples = [f.path for f in c.list_artifacts(result.run_id, "samples/step_0000030")]
    assert any(p.endswith("_original.wav") for p in samples) and any(p.endswith(".wav") and "reconstruction" in p
                                                                    for p in samples)
    assert any(p.endswith("_spectrogram.png") for p in samples)

    # Checkpoints: safetensors + JSON/YAML only, the last num_to_keep kept.
    ckpt = Path(result.checkpoint_path)
    assert ckpt.name == "checkpoint_00000030"
    names = {p.name for p in ckpt.iterdir()}
    assert {"generator.safetensors", "discriminator.safetensors", "train_state.safetensors", "train_state.json",
            "config.yaml", "meta.json", "rng_rank0.json", "rng_rank1.json"} <= names
    assert not [n for n in names if n.endswith((".pt", ".pkl", ".pth"))]
    assert len(list(ckpt.parent.glob("checkpoint_0*"))) == 2

    # Registry: version with the alias; the codec loads from models:/ and encodes.
    (version,) = c.search_model_versions("name='test-codec'")
    assert version.run_id == result.run_id and result.model_uri == f"models:/test-codec/{version.version}"
    codec = Codec.from_pretrained("models:/test-codec@latest")
    codes = codec.encode(music_clip(2.0, 24000, 1, seed=3)[:, 0], 24000)
    assert codes.shape == (1, 8, 50)
    assert codes.min() >= 0 and codes.max() < 1024
    assert not np.array_equal(codes[0, 0], codes[0, 1])


def test_worker_failure_and_resubmission_resume_same_run(music_shards, tmp_path, mlflow_sqlite):
    from mlflow import MlflowClient

    from pipelines.train.driver import run_training
    from pipelines.train.loop import FAILURE_MARKER

    cfg = tiny_config(music_shards, tmp_path, mlflow_sqlite, "flaky", "schedule.max_steps=16",
                      "schedule.val_every=8", "schedule.checkpoint_every=5", "debug.fail_at_step=12",
                      "debug.fail_rank=1", "tracking.register_name=null")
    result = run_training(cfg)

    assert (tmp_path / "ray_results" / "flaky" / FAILURE_MARKER).is_file()  # the failure did happen
    c = MlflowClient(mlflow_sqlite)
    exp = c.get_experiment_by_name("test-train")
    runs = c.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id]  # exactly one run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["ray.attempt_start_step"] == "10"  # the last attempt restored checkpoint 10
    assert steps_of(c, result.run_id, "train/loss_g") == list(range(1, 17))  # no gap, no restart
    assert steps_of(c, result.run_id, "val/mel_nq8") == [8, 16]
    assert result.metrics["step"] == 16
    assert run.data.tags["final_model_uri"].startswith("models:/m-")  # logged, not registered

    # Resubmitting the same run name with more steps continues from the last checkpoint and MLflow run.
    longer = tiny_config(music_shards, tmp_path, mlflow_sqlite, "flaky", "schedule.max_steps=18",
                         "schedule.val_every=8", "schedule.checkpoint_every=5", "tracking.register_name=null")
    again = run_training(longer)
    assert again.run_id == result.run_id and again.metrics["step"] == 18
    assert len(c.search_runs([exp.experiment_id])) == 1
    run = c.get_run(result.run_id)
    assert run.data.tags["ray.attempt_start_step"] == "16"
    assert run.data.tags["param_changed.schedule.max_steps"] == "18" and run.data.params["schedule.max_steps"] == "16"
    assert steps_of(c, result.run_id, "train/loss_g") == list(range(1, 19))


def test_finetune_from_imported_release(music_shards, tmp_path, mlflow_sqlite):
    """An original muq-xcodec release, imported, fine-tunes here: the run starts from its generator and
    discriminator, its own MuQ computes the semantic targets, and the registered result keeps that MuQ."""
    import torch
    from original_checkpoint import write_original_checkpoint
    from safetensors.torch import load_file

    from codec.convert import import_muq_xcodec
    from codec.inference import Codec, load_teacher
    from pipelines.data.dataset import SemanticStage, build_teacher
    from pipelines.train.driver import data_config, run_training

    ckpt, muq_json, _, _ = write_original_checkpoint(tmp_path / "orig")
    imported = tmp_path / "imported"
    import_muq_xcodec(ckpt, imported, muq_config=muq_json, with_discriminator=True)
    cfg = load_train_config(REPO / "configs" / "train" / "finetune_cpu.yaml", [
        f"init.checkpoint={imported}", f"data.shards=[{music_shards}]", f"run.storage_path={tmp_path / 'ray_results'}",
        "run.name=finetune", f"tracking.uri={mlflow_sqlite}", "tracking.experiment=test-finetune",
        "tracking.register_name=test-finetuned", "schedule.max_steps=2", "schedule.val_every=2",
        "schedule.checkpoint_every=2", "scaling.num_workers=1", "codec.optim.lr=1e-6"])
    assert cfg.codec.teacher.source == "imported" and cfg.codec.model.encoder_dim == 4  # the checkpoint's config

    # The data pipeline's MuQ stage runs the checkpoint's own teacher, not a random or published one.
    dcfg = data_config(cfg)
    assert dcfg.teacher.source == "imported" and dcfg.teacher_checkpoint == str(imported)
    audio = music_clip(1.92, 24000, 1, seed=5)[:, 0][None, None, :].astype(np.float32)
    features = SemanticStage(dcfg.teacher, dcfg.teacher_checkpoint)({"audio": audio})["semantic"]
    with torch.no_grad():
        expected = load_teacher(imported)(torch.from_numpy(audio)).numpy()
    np.testing.assert_array_equal(features, expected)
    assert not np.allclose(features, build_teacher({"source": "random", "dim": 64, "depth": 1, "heads": 2,
                                                    "conv_dim": 8})(torch.from_numpy(audio)).detach().numpy())

    result = run_training(cfg)
    assert result.metrics["step"] == 2
    # Two steps at lr 1e-6 from the imported weights: within 1e-5 of them, and moved (training happened).
    final = Path(result.checkpoint_path)
    for ours, theirs in (("generator.safetensors", "model.safetensors"),
                         ("discriminator.safetensors", "discriminator.safetensors")):
        got, start = load_file(str(final / ours)), load_file(str(imported / theirs))
        assert got.keys() == start.keys(), ours
        for key in start:
            torch.testing.assert_close(got[key], start[key], rtol=0, atol=1e-5, msg=key)
        assert any(not torch.equal(got[key], start[key]) for key in start), f"{ours}: no step was taken"

    # The registered model carries the imported teacher and encodes with it.
    assert result.model_uri == "models:/test-finetuned/1"
    codec = Codec.from_pretrained(result.model_uri)
    assert codec.config.teacher.source == "imported"
    stored = load_file(str(imported / "teacher.safetensors"))
    for key, value in codec.get_teacher().muq.state_dict().items():
        torch.testing.assert_close(value, stored[key], rtol=0, atol=0, msg=key)
    assert codec.encode(music_clip(2.0, 24000, 1, seed=3)[:, 0], 24000).shape == (1, 8, 50)
