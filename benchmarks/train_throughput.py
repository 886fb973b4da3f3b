"""Training throughput: GAN steps/s through Ray Train vs. a plain single-process PyTorch loop.

Both sides run the same ``GANTrainStep`` on the same model (a training config's codec), the same batch
size and the same in-memory synthetic music segments with teacher features; only the plumbing differs
(Ray Data ``iter_torch_batches`` + DDP-prepared models in a Ray Train worker vs. slicing tensors in one
process). Steps after ``--warmup`` are timed.

    python benchmarks/train_throughput.py --config configs/train/tiny_cpu.yaml --steps 20 --warmup 3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from report import emit  # noqa: E402  (benchmarks/report.py; this folder is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_data(cfg, n: int):
    """``n`` segments: audio [n, 1, L] and teacher features [n, T, D] (seeded)."""
    import numpy as np

    from codec.builders import build_teacher
    from pipelines.common.synthetic import music_clip
    from pipelines.data.segments import segment_samples

    sr = int(cfg.codec.model.sample_rate)
    length = segment_samples(float(cfg.data.segment_seconds), sr)
    audio = np.stack([music_clip(length / sr, sr, 1, seed=i)[:length, 0] for i in range(n)])
    with torch.no_grad():
        semantic = build_teacher(cfg.codec)(torch.from_numpy(audio)).numpy()
    return audio[:, None, :], semantic


def time_steps(step_fn, batches, warmup: int, steps: int) -> float:
    """Steps/s over ``steps`` timed steps after ``warmup`` untimed ones."""
    it = iter(batches)
    for _ in range(warmup):
        audio, semantic = next(it)
        step_fn(audio, semantic)
    start = time.perf_counter()
    for _ in range(steps):
        audio, semantic = next(it)
        step_fn(audio, semantic)
    return steps / (time.perf_counter() - start)


def cycle_batches(audio, semantic, batch_size: int):
    n = audio.shape[0] // batch_size * batch_size
    while True:
        for i in range(0, n, batch_size):
            yield torch.from_numpy(audio[i:i + batch_size]), torch.from_numpy(semantic[i:i + batch_size])


def plain_loop(cfg, audio, semantic, warmup: int, steps: int, threads: int) -> float:
    """Single process, no Ray: steps/s."""
    from codec.builders import build_discriminator, build_generator, build_train_step

    torch.set_num_threads(threads)
    step_fn = build_train_step(cfg.codec, build_generator(cfg.codec), build_discriminator(cfg.codec))
    return time_steps(step_fn, cycle_batches(audio, semantic, int(cfg.loader.batch_size)), warmup, steps)


def ray_worker(config: dict) -> None:
    """Ray Train worker: same step, data from the dataset shard, DDP via ``prepare_model``."""
    import ray.train
    import ray.train.torch

    from codec.builders import build_discriminator, build_generator, build_train_step
    from pipelines.train.config import from_dict

    torch.set_num_threads(config["threads"])
    cfg = from_dict(config["train"])
    kwargs = {"find_unused_parameters": bool(cfg.schedule.find_unused_parameters)}
    g = ray.train.torch.prepare_model(build_generator(cfg.codec), parallel_strategy_kwargs=kwargs)
    d = ray.train.torch.prepare_model(build_discriminator(cfg.codec), parallel_strategy_kwargs=kwargs)
    step_fn = build_train_step(cfg.codec, g, d, device=ray.train.torch.get_device())
    shard = ray.train.get_dataset_shard("train")

    def batches():
        while True:
            for b in shard.iter_torch_batches(batch_size=int(cfg.loader.batch_size), drop_last=True,
                                              dtypes=torch.float32):
                yield b["audio"], b["semantic"]

    rate = time_steps(step_fn, batches(), config["warmup"], config["steps"])
    if ray.train.get_context().get_world_rank() == 0:  # same machine: hand the number back through a file
        Path(config["result_file"]).write_text(json.dumps({"steps_per_s": rate}))


def ray_train_loop(cfg, audio, semantic, warmup: int, steps: int, threads: int, workers: int) -> float:
    """The same loop through ``TorchTrainer`` with ``workers`` CPU workers: steps/s of rank 0."""
    import tempfile

    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipelines.common.config import to_dict

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ds = ray.data.from_items([{"audio": a, "semantic": s} for a, s in zip(audio, semantic, strict=True)])
    result_file = Path(tempfile.mkdtemp(prefix="train_throughput_")) / "result.json"
    trainer = TorchTrainer(
        ray_worker, train_loop_config={"train": to_dict(cfg), "warmup": warmup, "steps": steps, "threads": threads,
                                       "result_file": str(result_file)},
        scaling_config=ray.train.ScalingConfig(num_workers=workers, resources_per_worker={
            "CPU": float(cfg.scaling.cpus_per_worker)}),
        run_config=ray.train.RunConfig(name=f"throughput-{workers}w-{int(time.time())}",
                                       storage_path=str(result_file.parent)),
        datasets={"train": ds})
    trainer.fit()
    return float(json.loads(result_file.read_text())["steps_per_s"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="training YAML (default: embedded tiny CPU defaults)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process / worker")
    parser.add_argument("--workers", type=int, nargs="+", default=[1], help="Ray Train worker counts to run")
    parser.add_argument("overrides", nargs="*", help="training config dotlist overrides")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from pipelines.train.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    n = int(cfg.loader.batch_size) * max(args.workers) * 4
    audio, semantic = make_data(cfg, n)
    result = {"config": args.config or "<embedded>", "batch_size_per_worker": int(cfg.loader.batch_size),
              "segment_samples": int(audio.shape[-1]), "threads": args.threads, "timed_steps": args.steps}
    result["plain_steps_per_s"] = plain_loop(cfg, audio, semantic, args.warmup, args.steps, args.threads)
    print(f"plain loop: {result['plain_steps_per_s']:.3f} steps/s", flush=True)
    for w in args.workers:
        rate = ray_train_loop(cfg, audio, semantic, args.warmup, args.steps, args.threads, w)
        result[f"ray_{w}w_steps_per_s"] = rate
        result[f"ray_{w}w_samples_per_s"] = rate * w * int(cfg.loader.batch_size)
        result[f"ray_{w}w_over_plain"] = rate / result["plain_steps_per_s"]
    result["plain_samples_per_s"] = result["plain_steps_per_s"] * int(cfg.loader.batch_size)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}, indent=2))
    for w in args.workers:
        emit(f"training through Ray Train, {w} worker(s)", "samples/s", result[f"ray_{w}w_samples_per_s"],
             "plain single-process PyTorch loop", result["plain_samples_per_s"])
    return result


if __name__ == "__main__":
    main()
