"""Unit tests of the training job's config, checkpoint format, tracking helpers and validation metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.metrics import codebook_stats
from pipelines.common.config import ConfigError, to_dict
from pipelines.common.tracking import REDACTED, RunLogger, get_or_create_run, log_params, loggable_params
from pipelines.train.checkpoint import load_tree, rng_state, save_tree, set_rng_state
from pipelines.train.config import load_train_config
from pipelines.train.validation import COLLAPSE_TAG, Validator, spectrogram_png

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "configs" / "train").glob("*.yaml"))


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A saved tiny codec (generator + random teacher, no discriminator) to fine-tune from."""
    from codec import Codec

    return Codec.from_pretrained("tiny").save_pretrained(tmp_path_factory.mktemp("tiny"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load(path, tiny_checkpoint):
    cfg = load_train_config(path, [f"init.checkpoint={tiny_checkpoint}"] if "finetune" in path.name else [])
    assert cfg.scaling.num_workers >= 1
    assert cfg.codec.model.n_codebooks == 8 and cfg.codec.model.codebook_size == 1024


def test_recipe_config_is_the_real_recipe():
    cfg = load_train_config(REPO / "configs/train/muq_xcodec_8gpu.yaml")
    assert cfg.scaling.num_workers == 8 and cfg.scaling.use_gpu
    assert cfg.data.segment_seconds == 5.0
    assert cfg.codec.teacher.model_id == "OpenMuQ/MuQ-large-msd-iter"
    assert cfg.data.shards[0].startswith("s3://") and cfg.run.storage_path.startswith("s3://")
    assert cfg.tracking.uri.startswith("http")


def test_embedded_default_and_overrides():
    cfg = load_train_config(None, ["scaling.num_workers=1", "codec.optim.lr=0.001", "schedule.max_steps=7"])
    assert cfg.codec.name == "tiny" and cfg.codec.optim.lr == 0.001
    assert cfg.scaling.num_workers == 1 and cfg.schedule.max_steps == 7
    assert to_dict(cfg)["codec"]["model"]["encoder_dim"] == 8


@pytest.mark.parametrize("override, key", [
    ("scaling.num_workers=0", "scaling.num_workers"),
    ("scaling.num_wokers=2", "scaling.num_wokers"),
    ("schedule.max_steps=ten", "schedule.max_steps"),
    ("codec.model.n_codebooks=0", "codec.model.n_codebooks"),
    ("codec.optim.learning_rate=1", "codec.optim.learning_rate"),
    ("data.bogus=1", "data.bogus"),
    ("loader.source=tape", "loader.source"),
    ("schedule.val_quantizers=[1,16]", "schedule.val_quantizers"),
    ("debug.fail_rank=5", "debug.fail_rank"),
    ("scaling.backend=nccl", "scaling.backend"),
    ("codec_preset=nope", "codec_preset"),
])
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_train_config(REPO / "configs/train/tiny_cpu.yaml", [override])
    assert str(e.value).startswith(key), str(e.value)


def test_finetune_takes_the_checkpoint_config(tiny_checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_checkpoint.parent)
    cfg = load_train_config(REPO / "configs/train/finetune_cpu.yaml", [f"init.checkpoint={tiny_checkpoint.name}"])
    assert cfg.init.checkpoint == str(tiny_checkpoint)  # made absolute for the workers
    assert cfg.codec.name == "tiny" and cfg.codec.optim.lr == 2e-5  # the checkpoint's config + the YAML's override
    assert cfg.codec_preset is None


@pytest.mark.parametrize("overrides, message", [
    ([], "init.checkpoint: required"),
    (["init.checkpoint=CKPT", "codec_preset=tiny"], "codec_preset: set either codec_preset (tiny) or init.checkpoint"),
    (["init.checkpoint=/no/such/dir"], "init.checkpoint: /no/such/dir is not a codec checkpoint"),
    (["init.checkpoint=CKPT", "codec.model.codebook_size=512"],
     "codec.model: model.safetensors does not fit the run's codec config: quantizer.quantizers.0.codebook.weight: "
     "checkpoint [1024, 8] vs config [512, 8]"),
    (["init.checkpoint=CKPT", "init.discriminator=load"], "init.discriminator: 'load' but"),
    (["init.checkpoint=CKPT", "init.discriminator=maybe"], "init.discriminator: must be one of"),
])
def test_bad_finetune_config_names_the_key(tiny_checkpoint, overrides, message):
    with pytest.raises(ConfigError) as e:
        load_train_config(REPO / "configs/train/finetune_cpu.yaml",
                          [o.replace("CKPT", str(tiny_checkpoint)) for o in overrides])
    assert str(e.value).startswith(message), str(e.value)


def test_imported_teacher_needs_a_checkpoint():
    with pytest.raises(ConfigError, match="^codec.teacher.source: .*set init.checkpoint"):
        load_train_config(None, ["codec.teacher.source=imported", "codec.teacher.muq_config={encoder_dim: 32}"])


def test_params_redact_secrets():
    cfg = load_train_config(None, ["data.storage.key=AKIA123", "data.storage.secret=s3cr3t"])
    params = loggable_params(cfg)
    assert params["data.storage.key"] == REDACTED and params["data.storage.secret"] == REDACTED
    assert params["codec.optim.lr"] == "0.0001" and params["run.name"] == "muq-xcodec-local"
    assert not any("AKIA123" in v or "s3cr3t" in v for v in params.values())
    nested = loggable_params({"mlflow": {"api_token": "t", "password": "p", "credentials_file": "c"}, "n": 1})
    assert set(nested.values()) == {REDACTED, "1"}


def test_tree_roundtrip_optimizer_scheduler_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.99))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for _ in range(3):
        model(torch.randn(2, 4)).sum().backward()
        opt.step()
        sched.step()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "step": 3}
    save_tree(state, tmp_path, "train_state")
    assert not list(tmp_path.glob("*.pt")) and not list(tmp_path.glob("*.pkl"))
    loaded = load_tree(tmp_path, "train_state")
    assert set(loaded["optimizer"]["state"]) == {0, 1}  # int keys survive JSON
    assert loaded["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.99)
    for k, v in opt.state_dict()["state"][0].items():
        assert torch.equal(loaded["optimizer"]["state"][0][k], v)
    opt2 = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.ExponentialLR(opt2, gamma=0.9)
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr() and loaded["step"] == 3

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    save_tree(rng_state(), tmp_path, "rng")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())))
    set_rng_state(load_tree(tmp_path, "rng"))
    assert (random.random(), float(np.random.rand()), float(torch.rand(()))) == expected
    json.loads((tmp_path / "rng.json").read_text())


def test_codebook_stats():
    counts = torch.zeros(2, 8, dtype=torch.long)
    counts[0, :] = 5  # uniform over 8 codes
    counts[1, 3] = 40  # a single code
    usage, perplexity = codebook_stats(counts)
    assert usage.tolist() == [1.0, 0.125]
    assert perplexity[0].item() == pytest.approx(8.0) and perplexity[1].item() == pytest.approx(1.0)


class Excerpts:
    """The validation dataset's interface (``iter_torch_batches``) over seeded music clips and their tiny-MuQ
    features, without Ray."""

    def __init__(self, cfg, n: int):
        from codec.builders import build_teacher
        from pipelines.common.synthetic import music_clip

        sr, seconds = int(cfg.codec.model.sample_rate), float(cfg.data.segment_seconds)
        self.audio = torch.from_numpy(np.stack([music_clip(seconds, sr, 1, seed=50 + i)[:, 0] for i in range(n)]))
        with torch.no_grad():
            self.semantic = build_teacher(cfg.codec)(self.audio)
        self.audio = self.audio[:, None, :]

    def iter_torch_batches(self, batch_size: int, device, dtypes):
        for i in range(0, len(self.audio), batch_size):
            yield {"audio": self.audio[i:i + batch_size].to(device, dtypes),
                   "semantic": self.semantic[i:i + batch_size].to(device, dtypes)}


def test_validation_warns_and_tags_a_collapsed_codec(mlflow_sqlite, caplog):
    """A healthy codec: no warning, no tag. Every code forced to one value: a warning naming the layers and
    their perplexity, and the run tag. Back to healthy: the tag is gone."""
    import logging

    from mlflow import MlflowClient

    from codec.builders import build_generator

    cfg = load_train_config(None, ["schedule.val_quantizers=[1,8]", "schedule.num_audio_samples=1"])
    assert cfg.loader.val_batches * cfg.loader.val_batch_size == 8  # the default validation set
    generator = build_generator(cfg.codec)
    run_id = get_or_create_run(mlflow_sqlite, "test-validation", "collapse")
    tracker = RunLogger(mlflow_sqlite, run_id)
    validator = Validator(cfg, torch.device("cpu"))
    data = Excerpts(cfg, 8)
    tags = lambda: MlflowClient(mlflow_sqlite).get_run(run_id).data.tags  # noqa: E731

    with caplog.at_level(logging.INFO, logger="pipelines.train.validation"):
        healthy = validator.run(generator, data, tracker, step=1)
    assert min(healthy[f"val/perplexity_l{k}"] for k in range(1, 9)) >= cfg.schedule.collapse_perplexity_floor
    assert healthy["val/collapsed_layers"] == 0 and 0 <= healthy["val/identification_nq8"] <= 1
    assert {"val/codes_used_l8", "val/usage_l1", "val/mel_nq1", "val/si_sdr_nq8", "val/constant_codes_mel"} <= set(healthy)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert COLLAPSE_TAG not in tags()
    assert [f.path for f in MlflowClient(mlflow_sqlite).list_artifacts(run_id, "samples/step_0000001")]

    saved = {k: v.clone() for k, v in generator.state_dict().items()}
    with torch.no_grad():  # every codebook vector the same: every frame picks code 0 in every layer
        for vq in generator.quantizer.quantizers:
            vq.codebook.weight.fill_(1.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipelines.train.validation"):
        collapsed = validator.run(generator, data, tracker, step=2)
    assert [collapsed[f"val/codes_used_l{k}"] for k in range(1, 9)] == [1.0] * 8
    assert collapsed["val/collapsed_layers"] == 8
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "[1, 2, 3, 4, 5, 6, 7, 8]" in warning and "L1 1.00" in warning and "L8 1.00" in warning
    assert tags()[COLLAPSE_TAG] == "1,2,3,4,5,6,7,8"
    history = MlflowClient(mlflow_sqlite).get_metric_history(run_id, "val/perplexity_l1")
    assert [(m.step, round(m.value, 3)) for m in sorted(history, key=lambda m: m.step)][1] == (2, 1.0)

    generator.load_state_dict(saved)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipelines.train.validation"):
        assert validator.run(generator, data, tracker, step=3)["val/collapsed_layers"] == 0
    assert COLLAPSE_TAG not in tags()
    assert any("back above" in r.getMessage() for r in caplog.records)


def test_validation_needs_two_excerpts():
    with pytest.raises(ConfigError, match="loader.val_batch_size"):
        load_train_config(None, ["loader.val_batch_size=1", "loader.val_batches=1"])
    with pytest.raises(ConfigError, match="schedule.collapse_perplexity_floor"):
        load_train_config(None, ["schedule.collapse_perplexity_floor=-1"])


def test_spectrogram_png(tmp_path):
    x = np.sin(np.linspace(0, 2000, 24000)).astype(np.float32)
    path = spectrogram_png(x, 0.5 * x, 24000, tmp_path / "s.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_run_lookup_params_and_step_resume(mlflow_sqlite):
    run_id = get_or_create_run(mlflow_sqlite, "exp", "run-a")
    assert get_or_create_run(mlflow_sqlite, "exp", "run-a") == run_id  # same name -> same run
    assert get_or_create_run(mlflow_sqlite, "exp", "run-b") != run_id
    assert log_params(mlflow_sqlite, run_id, {"a": "1", "b": "2"}) == {}
    assert log_params(mlflow_sqlite, run_id, {"a": "1", "b": "3"}) == {"b": ("2", "3")}
    log = RunLogger(mlflow_sqlite, run_id)
    for step in range(1, 6):
        log.log_metrics({"train/loss": float(step)}, step)
    restarted = RunLogger(mlflow_sqlite, run_id)
    assert restarted.resume_from_history(["train/loss"]) == 5
    for step in range(3, 8):  # replayed steps 3..5 are skipped
        restarted.log_metrics({"train/loss": 10.0 + step}, step)
    history = log.client.get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5, 6, 7]
    assert log.client.get_run(run_id).data.params["b"] == "2"


def test_failure_injection_happens_once(tmp_path):
    from pipelines.train.loop import FAILURE_MARKER, InjectedFailure, maybe_inject_failure

    cfg = load_train_config(None, ["debug.fail_at_step=3", "debug.fail_rank=1"])
    run_dir = str(tmp_path / "run")
    maybe_inject_failure(cfg, run_dir, rank=0, step=3)  # other rank: nothing
    maybe_inject_failure(cfg, run_dir, rank=1, step=2)  # other step: nothing
    with pytest.raises(InjectedFailure, match="rank 1 before step 3"):
        maybe_inject_failure(cfg, run_dir, rank=1, step=3)
    assert json.loads((tmp_path / "run" / FAILURE_MARKER).read_text())["step"] == 3
    maybe_inject_failure(cfg, run_dir, rank=1, step=3)  # the retry passes


@pytest.mark.slow
def test_failure_marker_on_s3(s3_bucket):
    from pipelines.train.loop import InjectedFailure, maybe_inject_failure

    cfg = load_train_config(None, ["debug.fail_at_step=1"])
    with pytest.raises(InjectedFailure):
        maybe_inject_failure(cfg, f"s3://{s3_bucket}/ray_results/run", rank=0, step=1)
    maybe_inject_failure(cfg, f"s3://{s3_bucket}/ray_results/run", rank=0, step=1)


def test_ddp_without_find_unused_parameters_by_default():
    """Every parameter gets a gradient (quantizer dropout masks RVQ layers but runs them all), so DDP's extra
    graph pass is off by default in the schema and every shipped config, and stays a config option."""
    for path in [None, *sorted((REPO / "configs" / "train").glob("*.yaml"))]:
        if path is not None and "finetune" in path.name:
            continue  # needs init.checkpoint; same schema default
        assert load_train_config(path).schedule.find_unused_parameters is False, path
    assert load_train_config(None, ["schedule.find_unused_parameters=true"]).schedule.find_unused_parameters


def test_full_batches_recut_short_batches():
    from pipelines.train.loop import all_ranks_agree, full_batches

    sizes = [4, 2, 4, 3, 1, 4, 2]  # short batches mid-stream, as a local shuffle buffer yields them
    start, stream = 0, []
    for n in sizes:
        stream.append({"audio": torch.arange(start, start + n).float()})
        start += n
    out = list(full_batches(iter(stream), 4))
    assert [len(b["audio"]) for b in out] == [4] * (sum(sizes) // 4)
    assert torch.equal(torch.cat([b["audio"] for b in out]), torch.arange(sum(sizes) // 4 * 4).float())
    assert all_ranks_agree(True, torch.device("cpu")) and not all_ranks_agree(False, torch.device("cpu"))
