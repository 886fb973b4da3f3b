"""The per-worker GAN training loop run by Ray Train (``TorchTrainer(train_loop_per_worker)``).

Each worker builds the generator and discriminator from the codec config (same seed on every rank),
restores the last checkpoint if Ray hands one over (weights, both optimizers and schedulers, step, RNG)
or else, when fine-tuning, loads the ``init.checkpoint`` weights (:mod:`pipelines.train.init`), wraps
both networks in DDP and runs :class:`codec.train_step.GANTrainStep` on batches of its ``train`` dataset
shard until ``schedule.max_steps``. Every ``checkpoint_every`` steps all workers call
``ray.train.report`` together (rank 0 writes the state, every rank its RNG). Rank 0 alone talks to
MLflow: step metrics, validation (codes used and perplexity per RVQ layer, mel distance, SI-SDR and
identification accuracy per number of quantizers, the constant-codes baseline, a warning and run tag
when a layer collapses), audio and spectrogram samples, and the final model
(:mod:`pipelines.train.validation` holds the validation code).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import ray.train
import ray.train.torch
import torch
from omegaconf import DictConfig

from codec.builders import build_discriminator, build_generator, build_train_step
from codec.train_step import GANTrainStep, unwrap
from pipelines.common.config import to_yaml
from pipelines.common.tracking import RunLogger, system_info
from pipelines.train.checkpoint import (
    load_tree,
    load_weights,
    rng_state,
    save_tree,
    save_weights,
    set_rng_state,
)
from pipelines.train.config import from_dict
from pipelines.train.init import load_init_weights

logger = logging.getLogger(__name__)

TRAIN_METRIC_PREFIX = "train/"
FAILURE_MARKER = ".debug_failure_injected"


class InjectedFailure(RuntimeError):
    """Raised by the ``debug.fail_at_step`` hook."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def maybe_inject_failure(cfg: DictConfig, run_dir: str, rank: int, step: int) -> None:
    """Raise :class:`InjectedFailure` on ``debug.fail_rank`` before step ``debug.fail_at_step``, once.

    A marker file under the run's storage folder makes the failure happen on the first attempt only.
    """
    dbg = cfg.debug
    if dbg.fail_at_step is None or rank != dbg.fail_rank or step != dbg.fail_at_step:
        return
    fs, root = fsspec.core.url_to_fs(run_dir)
    marker = f"{root.rstrip('/')}/{FAILURE_MARKER}"
    if fs.exists(marker):
        return
    fs.makedirs(root, exist_ok=True)
    with fs.open(marker, "w") as f:
        f.write(json.dumps({"rank": rank, "step": step, "time": time.time()}))
    raise InjectedFailure(f"debug.fail_at_step: injected failure on rank {rank} before step {step}")


def save_checkpoint(directory: Path, rank: int, step_fn: GANTrainStep, cfg: DictConfig,
                    run_id: str) -> None:
    """Write this rank's part of a training checkpoint (see :mod:`pipelines.train.checkpoint`)."""
    save_tree(rng_state(), directory, f"rng_rank{rank}")
    if rank != 0:
        return
    save_weights(unwrap(step_fn.generator), directory / "generator.safetensors")
    save_weights(unwrap(step_fn.discriminator), directory / "discriminator.safetensors")
    save_tree(step_fn.state_dict(), directory, "train_state")
    (directory / "config.yaml").write_text(to_yaml(cfg))
    (directory / "meta.json").write_text(json.dumps({"step": step_fn.step, "mlflow_run_id": run_id}))


def restore_checkpoint(checkpoint: ray.train.Checkpoint, rank: int, generator: torch.nn.Module,
                       discriminator: torch.nn.Module) -> tuple[dict, dict, dict | None]:
    """Load weights in place; return (train_state, meta, this rank's RNG state or None)."""
    with checkpoint.as_directory() as d:
        d = Path(d)
        load_weights(generator, d / "generator.safetensors")
        load_weights(discriminator, d / "discriminator.safetensors")
        train_state = load_tree(d, "train_state")
        meta = json.loads((d / "meta.json").read_text())
        rng = load_tree(d, f"rng_rank{rank}") if (d / f"rng_rank{rank}.json").exists() else None
    return train_state, meta, rng


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank iff ``flag`` is true on every rank (a one-element MIN all-reduce; a no-op
    without a process group or with one rank)."""
    import torch.distributed as dist

    from codec.nn.distributed import is_distributed

    if not is_distributed():
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def full_batches(batches: Iterator[dict], batch_size: int) -> Iterator[dict]:
    """Re-cut a stream of dict batches into batches of exactly ``batch_size`` rows; a short tail is dropped.

    Ray Data's local shuffle buffer can yield short batches mid-stream (ray-project/ray#66085); their rows
    are carried into the next batch instead of becoming a short training step.
    """
    carry: dict | None = None
    for batch in batches:
        if carry is not None:
            batch = {k: torch.cat([carry[k], v]) for k, v in batch.items()}
        n = len(next(iter(batch.values())))
        start = 0
        while n - start >= batch_size:
            yield {k: v[start:start + batch_size] for k, v in batch.items()}
            start += batch_size
        carry = {k: v[start:] for k, v in batch.items()} if start < n else None


def batches_forever(shard: Any, batch_size: int, device: torch.device, seed: int,
                    shuffle_buffer_batches: int = 4) -> Iterator[dict]:
    """Epoch after epoch of ``{"audio": [B,1,L], "semantic": [B,T,D]}`` batches, in lockstep on every rank.

    Shards split with ``streaming_split(equal=True)`` hold equal rows, not equal batches, and every new epoch
    is a barrier across ranks: a rank that ran out first would wait there while the others wait for it in
    DDP's all-reduce (a silent hang). So before each batch all ranks agree (:func:`all_ranks_agree`) that
    each has a full batch; when one has not, the epoch ends on every rank (the others drop their rest) and
    every rank yields exactly the same number of batches. Rows are shuffled locally (a buffer of
    ``shuffle_buffer_batches`` batches, 0 = off) with a seed that changes every epoch.

    Raises:
        RuntimeError: (on every rank) an epoch in which some rank had no full batch at all.
    """
    epoch = 0
    while True:
        shuffle = {"local_shuffle_buffer_size": shuffle_buffer_batches * batch_size,
                   "local_shuffle_seed": seed + epoch} if shuffle_buffer_batches > 0 else {}
        raw = iter(shard.iter_torch_batches(batch_size=batch_size, device=device, dtypes=torch.float32,
                                            **shuffle))
        rows = full_batches(raw, batch_size)
        n = 0
        try:
            while all_ranks_agree((batch := next(rows, None)) is not None, device):
                n += 1
                yield batch
        finally:
            rows.close()
            getattr(raw, "close", lambda: None)()
        if n == 0:
            raise RuntimeError(f"a rank's train dataset shard has fewer than loader.batch_size={batch_size} rows "
                               "in an epoch")
        epoch += 1


def report(step_fn: GANTrainStep, metrics: dict[str, float], cfg: DictConfig, run_id: str,
           rank: int) -> None:
    """Checkpoint through ``ray.train.report`` (a barrier: every rank calls it at the same steps)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(Path(tmp), rank, step_fn, cfg, run_id)
        ray.train.report({**metrics, "step": step_fn.step}, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"checkpoint_{step_fn.step:08d}")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point.

    Args:
        config: ``{"train": <TrainConfig as dict>, "mlflow_run_id": str, "tracking_uri": str,
            "registry_uri": str, "run_dir": str}`` built by :mod:`pipelines.train.driver`.
    """
    from pipelines.train.validation import Validator, export_and_log_model

    cfg = from_dict(config["train"])
    run_id = config["mlflow_run_id"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    codec_cfg = cfg.codec
    sc = cfg.schedule

    generator = build_generator(codec_cfg)
    discriminator = build_discriminator(codec_cfg)
    train_state, rng, start_step = None, None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        train_state, meta, rng = restore_checkpoint(checkpoint, rank, generator, discriminator)
        start_step = int(meta["step"])
        if meta.get("mlflow_run_id") not in (None, run_id):
            logger.warning("checkpoint belongs to MLflow run %s, logging into %s", meta["mlflow_run_id"], run_id)
    elif cfg.init.checkpoint:
        logger.info("rank %d: fine-tuning: loaded %s", rank, load_init_weights(cfg, generator, discriminator))
    ddp_kwargs = {"find_unused_parameters": bool(sc.find_unused_parameters)}
    generator = ray.train.torch.prepare_model(generator, parallel_strategy_kwargs=ddp_kwargs)
    discriminator = ray.train.torch.prepare_model(discriminator, parallel_strategy_kwargs=ddp_kwargs)
    step_fn = build_train_step(codec_cfg, generator, discriminator, teacher=None, device=device)
    if train_state is not None:
        step_fn.load_state_dict(train_state)
    if rng is not None:
        set_rng_state(rng)
    else:  # fresh start, or a rank that was not in the checkpoint: a seed that differs per rank and step
        seed_everything(int(cfg.run.seed) * 1000 + rank * 7919 + start_step)

    tracker = None
    if rank == 0:
        tracker = RunLogger(config["tracking_uri"], run_id, config.get("registry_uri"))
        tracker.start()
        last = tracker.resume_from_history([f"{TRAIN_METRIC_PREFIX}loss_g"])
        tracker.set_tags({"ray.world_size": world, "ray.attempt_start_step": start_step,
                          **{f"system.{k}": v for k, v in system_info().items()}})
        logger.info("rank 0: starting at step %d (last logged step %d)", start_step, last)
    validator = Validator(cfg, device) if rank == 0 else None

    shard = ray.train.get_dataset_shard("train")
    batches = batches_forever(shard, int(cfg.loader.batch_size), device,
                              int(cfg.run.seed) * 1000 + rank * 7919 + start_step,
                              int(cfg.loader.shuffle_buffer_batches))
    t0, last_step, metrics = time.perf_counter(), step_fn.step, {}
    while step_fn.step < sc.max_steps:
        maybe_inject_failure(cfg, config["run_dir"], rank, step_fn.step + 1)
        batch = next(batches)
        metrics = step_fn(batch["audio"], batch["semantic"])
        step = step_fn.step
        if tracker is not None and (step % sc.log_every == 0 or step == sc.max_steps):
            elapsed = time.perf_counter() - t0
            rate = (step - last_step) / elapsed if elapsed > 0 else 0.0
            tracker.log_metrics({f"{TRAIN_METRIC_PREFIX}{k}": v for k, v in metrics.items()}
                                | {"perf/steps_per_s": rate,
                                   "perf/samples_per_s": rate * int(cfg.loader.batch_size) * world}, step)
            t0, last_step = time.perf_counter(), step
        if validator is not None and (step % sc.val_every == 0 or step == sc.max_steps):
            validator.run(unwrap(generator), ray.train.get_dataset_shard("validation"), tracker, step)
        if step % sc.checkpoint_every == 0 or step == sc.max_steps:
            report(step_fn, metrics, cfg, run_id, rank)
    batches.close()  # ends this rank's dataset iterator now, not at garbage collection

    if tracker is not None:
        export_and_log_model(unwrap(generator), cfg, tracker, step_fn.step)
        tracker.end("FINISHED")
