"""CPU-seconds per GAN step under DDP with ``find_unused_parameters`` on vs off (``schedule.find_unused_parameters``).

Two gloo processes on this machine each build the codec of a training config twice (same seed), wrap one copy
with ``find_unused_parameters=True`` and one with ``False``, and run the same ``GANTrainStep`` on the same
synthetic segments, alternating blocks of steps between the two so machine load hits both alike. Each process
measures its own CPU time (``time.process_time``) per step; rank 0 prints the medians and the ratio. With
``False`` DDP raises at the next step if any parameter got no gradient, so finishing also proves every
parameter (every RVQ layer, quantizer dropout included) gets one.

    python benchmarks/ddp_unused_params.py --config configs/train/tiny_cpu.yaml --rounds 3 --steps 4
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def worker(rank: int, world: int, port: int, args: argparse.Namespace, out: dict) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP
    from train_throughput import cycle_batches, make_data  # benchmarks/ is on sys.path

    from codec.builders import build_discriminator, build_generator, build_train_step
    from pipelines.train.config import load_train_config

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    cfg = load_train_config(args.config, args.overrides)
    audio, semantic = make_data(cfg, int(cfg.loader.batch_size) * 4)
    steps, cpu = {}, {True: [], False: []}
    for unused in (True, False):
        torch.manual_seed(0)
        g = DDP(build_generator(cfg.codec), find_unused_parameters=unused)
        d = DDP(build_discriminator(cfg.codec), find_unused_parameters=unused)
        steps[unused] = (build_train_step(cfg.codec, g, d), cycle_batches(audio, semantic, int(cfg.loader.batch_size)))
    for round_ in range(args.rounds + 1):  # round 0 warms up; the order alternates between rounds
        for unused in ((True, False) if round_ % 2 else (False, True)):
            step_fn, batches = steps[unused]
            for _ in range(args.steps):
                a, s = next(batches)
                t = time.process_time()
                step_fn(a, s)
                if round_ > 0:
                    cpu[unused].append(time.process_time() - t)
    out[rank] = {k: statistics.median(v) for k, v in cpu.items()}
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(worker, args=(2, port, args, out), nprocs=2, join=True)
        result = dict(out)
    for rank, r in sorted(result.items()):
        print(f"rank {rank}: CPU-s per step  find_unused_parameters=True {r[True]:.3f}  False {r[False]:.3f}  "
              f"ratio True/False {r[True] / r[False]:.3f}")


if __name__ == "__main__":
    main()
