"""Driver side of training: datasets, MLflow run, and the ``TorchTrainer`` that runs the worker loop.

:func:`run_training` is what ``jobs.train`` calls. It resolves paths (a relative sqlite tracking URI or
storage path is made absolute so every worker sees the same one), finds or creates the MLflow run named
``run.name`` and logs the resolved config as params (secrets redacted), builds the train / validation Ray
datasets and the trainer, and calls ``fit()``. Resubmitting the same ``run.name`` with the same storage
path resumes both the Ray Train run (latest checkpoint) and the MLflow run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.train
from omegaconf import DictConfig
from ray.train.torch import TorchConfig, TorchTrainer

from pipelines.common.config import to_dict
from pipelines.common.tracking import (
    client,
    default_artifact_location,
    get_or_create_run,
    log_params,
    loggable_params,
    resolve_tracking_uri,
)
from pipelines.train.config import absolute_path
from pipelines.train.loop import train_loop_per_worker

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished training run produced."""

    run_id: str
    tracking_uri: str
    checkpoint_path: str | None
    metrics: dict[str, Any]
    model_uri: str | None


def data_config(cfg: DictConfig):
    """The data engineer's ``DataConfig`` for this run; its teacher always follows ``codec.teacher`` (when
    fine-tuning a checkpoint with its own teacher weights: that checkpoint's teacher)."""
    from pipelines.data.config import load_data_config

    data = to_dict(cfg.data)
    data["teacher"] = to_dict(cfg.codec.teacher)
    if cfg.init.checkpoint and cfg.codec.teacher.source != "pretrained":
        data["teacher_checkpoint"] = cfg.init.checkpoint
    return load_data_config(data)


def synthetic_datasets(cfg: DictConfig) -> dict[str, ray.data.Dataset]:
    """Seeded music-like clips with their teacher features, built on the driver (smoke runs, benchmarks)."""
    import torch

    from pipelines.common.synthetic import music_clip
    from pipelines.data.dataset import build_teacher
    from pipelines.data.segments import segment_samples

    sr = int(cfg.codec.model.sample_rate)
    n = segment_samples(float(cfg.data.segment_seconds), sr)
    dcfg = data_config(cfg)
    teacher = build_teacher(dcfg.teacher, dcfg.teacher_checkpoint)
    out = {}
    for split, offset in (("train", 0), ("validation", 100_000)):
        audio = np.stack([music_clip(n / sr, sr, 1, seed=int(cfg.run.seed) + offset + i)[:n, 0]
                          for i in range(int(cfg.loader.num_synthetic))])
        with torch.no_grad():
            semantic = teacher(torch.from_numpy(audio)).numpy()
        out[split] = ray.data.from_items([{"audio": a[None, :], "semantic": s} for a, s in zip(audio, semantic,
                                                                                                 strict=True)])
    return out


def shard_datasets(cfg: DictConfig) -> dict[str, ray.data.Dataset]:
    """Train / validation datasets from WebDataset shards through the data pipeline (``pipelines.data.dataset``).

    The validation set is the first ``loader.val_batches * loader.val_batch_size`` held-out segments,
    computed once and held by the driver (:func:`driver_owned`): every validation pass sees the same audio
    and no MuQ actor stays reserved for it during training. With ``loader.materialize`` (small smoke
    corpora) both splits come from one pass held the same way, so epochs replay the train set from the
    object store instead of re-running the decode and MuQ stages.
    """
    from pipelines.data.dataset import SplitFilter, add_semantic, build_segment_dataset
    from pipelines.data.training import build_training_dataset

    dcfg = data_config(cfg)
    n_val = int(cfg.loader.val_batches) * int(cfg.loader.val_batch_size)
    columns = ["audio", "semantic"]
    if cfg.loader.materialize:
        both = add_semantic(build_segment_dataset(dcfg, split=None), dcfg).materialize()
        light = {"num_cpus": dcfg.cpu.read_num_cpus}  # a default 1-CPU task may never fit beside the train workers
        train = both.filter(SplitFilter("train", dcfg.val_fraction), **light).select_columns(columns, **light)
        train = driver_owned(train)
        validation = both.filter(SplitFilter("val", dcfg.val_fraction), **light).limit(n_val)
        validation = validation.select_columns(columns, **light)
    else:
        train = build_training_dataset(dcfg, split="train")
        validation = build_training_dataset(dcfg, split="val").limit(n_val)
    validation = driver_owned(validation)
    if (n := validation.count()) < 2:
        raise ValueError(f"data.val_fraction: {n} validation segment(s) in {list(dcfg.shards)}; validation needs "
                         ">= 2 (identification compares them)")
    return {"train": train, "validation": validation}


def driver_owned(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """A small dataset computed now and re-created from the driver, so its blocks live on the driver's node.

    ``Dataset.materialize()`` leaves blocks where the tasks and actors that computed them ran; if that node
    is lost, Ray cannot recompute the outputs of a finished actor pool and readers wait forever (seen in
    the node-loss drill). Blocks put by the driver stay as long as the driver's node, which a job needs anyway.
    """
    return ray.data.from_items(dataset.take_all())


def build_datasets(cfg: DictConfig) -> dict[str, ray.data.Dataset]:
    """The ``train`` and ``validation`` Ray datasets (rows: ``audio`` [1, L], ``semantic`` [T, D])."""
    return synthetic_datasets(cfg) if cfg.loader.source == "synthetic" else shard_datasets(cfg)


def build_trainer(cfg: DictConfig, datasets: dict[str, ray.data.Dataset], loop_config: dict[str, Any],
                  storage_path: str) -> TorchTrainer:
    """A ``TorchTrainer`` for the config: scaling, gloo/nccl, checkpoints to keep, failures to retry.

    Only ``train`` is split across workers; rank 0 reads the whole ``validation`` dataset.
    """
    s = cfg.scaling
    resources = {"CPU": float(s.cpus_per_worker)}
    if s.use_gpu:
        resources["GPU"] = float(s.gpus_per_worker)
    backend = s.backend or ("nccl" if s.use_gpu else "gloo")
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=backend),
        scaling_config=ray.train.ScalingConfig(num_workers=int(s.num_workers), use_gpu=bool(s.use_gpu),
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.run.name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=int(cfg.schedule.num_to_keep)),
            failure_config=ray.train.FailureConfig(max_failures=int(cfg.schedule.max_failures)),
            worker_runtime_env={"env_vars": _forwarded_env()},
        ),
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )


def _forwarded_env() -> dict[str, str]:
    """Non-secret settings of the driver the workers need.

    Credentials (AWS keys, MLflow passwords / tokens) are deliberately not forwarded: runtime-env variables
    are visible in the Ray dashboard. Workers get them the way the driver did: from the cluster's
    environment (or the job's ``--runtime-env-json``).
    """
    names = ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL",
             "HF_HUB_OFFLINE", "HF_HOME")
    return {k: os.environ[k] for k in names if k in os.environ}


def run_training(cfg: DictConfig) -> TrainResult:
    """Train (or resume) the run described by ``cfg``; returns the MLflow run and the final checkpoint.

    Raises:
        ray.train.TrainingFailedError: the workers failed more than ``schedule.max_failures`` times.
    """
    tracking_uri = resolve_tracking_uri(cfg.tracking.uri)
    registry_uri = resolve_tracking_uri(cfg.tracking.registry_uri) if cfg.tracking.registry_uri else tracking_uri
    storage_path = absolute_path(cfg.run.storage_path)
    artifact_location = cfg.tracking.artifact_location or default_artifact_location(tracking_uri)
    run_id = get_or_create_run(tracking_uri, cfg.tracking.experiment, cfg.run.name,
                               artifact_location=artifact_location,
                               tags={"job": "train", "ray.storage_path": storage_path})
    changed = log_params(tracking_uri, run_id, loggable_params(cfg))
    if changed:
        logger.warning("resumed run %s with changed params (kept as tags param_changed.*): %s",
                       run_id, sorted(changed))
    logger.info("MLflow run %s at %s; Ray Train run %s/%s", run_id, tracking_uri, storage_path, cfg.run.name)

    if not ray.is_initialized():
        ray.init()  # RAY_ADDRESS (set by `ray job submit`) or a new local cluster
    datasets = build_datasets(cfg)
    loop_config = {"train": to_dict(cfg), "mlflow_run_id": run_id, "tracking_uri": tracking_uri,
                   "registry_uri": registry_uri, "run_dir": f"{storage_path.rstrip('/')}/{cfg.run.name}"}
    trainer = build_trainer(cfg, datasets, loop_config, storage_path)
    c = client(tracking_uri, registry_uri)
    try:
        result = trainer.fit()
    except BaseException:
        c.set_terminated(run_id, status="FAILED")
        raise
    tags = c.get_run(run_id).data.tags
    return TrainResult(run_id=run_id, tracking_uri=tracking_uri,
                       checkpoint_path=result.checkpoint.path if result.checkpoint else None,
                       metrics=dict(result.metrics or {}), model_uri=tags.get("final_model_uri"))
