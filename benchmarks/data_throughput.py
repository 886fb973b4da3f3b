"""Decode + resample + crop throughput: the Ray Data stage vs a plain webdataset + DataLoader loader.

Both loaders run the same per-track work (``pipelines.data.segments.cut_segments``) on the same synthetic
shards, at two (or more) corpus sizes; for each side the wall time and the CPU-seconds (this process and
all its descendants: Ray's raylet and workers, DataLoader workers) are fitted as ``fixed + per_item * n``
(n = segments), so start-up and steady state are reported apart. Ratios are Ray / DataLoader throughput
(> 1: Ray is faster).

    python benchmarks/data_throughput.py --tracks 50 500 --seconds 20 --workers 2
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
import soundfile as sf
from report import emit, init_ray  # benchmarks/report.py (this script's folder is on sys.path)


def write_shards(root: str, tracks: int, seconds: float, per_shard: int = 8) -> list[str]:
    """Synthetic prepare-style shards (KEY.flac + KEY.json) at mixed rates and channel counts."""
    from pipelines.common.shards import tar_bytes
    from pipelines.common.synthetic import music_clip

    layouts = [(44100, 2), (48000, 2), (24000, 1), (22050, 1)]
    paths, members = [], []
    for i in range(tracks):
        sr, ch = layouts[i % len(layouts)]
        buf = io.BytesIO()
        sf.write(buf, music_clip(seconds, sr, ch, seed=i), sr, format="FLAC")
        members += [(f"t{i:05d}.flac", buf.getvalue()), (f"t{i:05d}.json", b"{}")]
        if len(members) == 2 * per_shard or i == tracks - 1:
            paths.append(os.path.join(root, f"bench-{len(paths):06d}.tar"))
            with open(paths[-1], "wb") as f:
                f.write(tar_bytes(members))
            members = []
    return paths


def cpu_seconds() -> float:
    """CPU-s of this process, its reaped children and its live descendants (Ray workers, DataLoader workers)."""
    import resource

    import psutil

    total = sum(resource.getrusage(w).ru_utime + resource.getrusage(w).ru_stime
                for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def run_ray(paths: list[str], args) -> tuple[int, float, float]:
    import ray

    from pipelines.data.config import load_data_config
    from pipelines.data.dataset import build_segment_dataset

    if not ray.is_initialized():
        init_ray(num_cpus=args.workers)
    cfg = load_data_config({"shards": paths, "segment_seconds": args.segment_seconds,
                            "segments_per_track": args.segments, "val_fraction": 0.0,
                            "cpu": {"num_cpus": 1.0, "batch_size": 2, "read_num_cpus": 0.25}})
    warm = load_data_config({**{"shards": paths[:1]}, "segment_seconds": args.segment_seconds})
    build_segment_dataset(warm, split=None).take(1)  # start the workers and import torch there (not timed)
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = 0
    for batch in build_segment_dataset(cfg, split=None).iter_batches(batch_size=16, batch_format="numpy"):
        n += len(batch["audio"])
    return n, time.perf_counter() - t0, cpu_seconds() - c0


def _segments(sample, spec):
    from pipelines.common.audio_decode import Skip, find_audio
    from pipelines.data.segments import cut_segments

    found = find_audio(sample)
    if isinstance(found, Skip):
        return np.zeros((0, 1, spec.length), np.float32)
    result = cut_segments(found[1], sample["__key__"], spec)
    if isinstance(result, Skip):
        return np.zeros((0, 1, spec.length), np.float32)
    return np.stack([seg[None] for _, seg in result])


def run_torch(paths: list[str], args) -> tuple[int, float, float]:
    import functools

    import torch
    import webdataset as wds

    from pipelines.data.segments import SegmentSpec, segment_samples

    spec = SegmentSpec(length=segment_samples(args.segment_seconds), per_track=args.segments)
    ds = (wds.WebDataset(paths, shardshuffle=False, nodesplitter=wds.split_by_node,
                         workersplitter=wds.split_by_worker, empty_check=False)
          .map(functools.partial(_segments, spec=spec)))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.workers)
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = sum(len(segs) for segs in loader)
    return n, time.perf_counter() - t0, cpu_seconds() - c0


def fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares ``(fixed, per_item)`` of ``value = fixed + per_item * n``."""
    n = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    per_item, fixed = np.polyfit(n, y, 1)
    return float(fixed), float(per_item)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[50, 500],
                        help="corpus sizes in tracks (>= 2 sizes for the fixed + per-item fit)")
    parser.add_argument("--seconds", type=float, default=20.0, help="track length")
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--segments", type=int, default=4, help="segments per track")
    parser.add_argument("--workers", type=int, default=2, help="CPUs for Ray / DataLoader workers")
    args = parser.parse_args()
    sizes = sorted(set(args.tracks))
    runs: dict[str, list[tuple[int, float, float]]] = {"torch": [], "ray": []}
    with tempfile.TemporaryDirectory() as root:
        for tracks in sizes:
            folder = os.path.join(root, str(tracks))
            os.makedirs(folder)
            paths = write_shards(folder, tracks, args.seconds)
            runs["torch"].append(run_torch(paths, args))
            runs["ray"].append(run_ray(paths, args))
            for side, name in (("torch", "webdataset+DataLoader"), ("ray", "Ray Data")):
                n, wall, cpu = runs[side][-1]
                print(f"{tracks} tracks, {name:22s}: {n} segments in {wall:.2f} s wall, {cpu:.2f} CPU-s "
                      f"= {n / wall:.1f} segments/s", flush=True)
    print(f"tracks {sizes} x {args.seconds:.0f}s, {args.segments} x {args.segment_seconds:.1f}s segments, "
          f"{args.workers} workers")
    if len(sizes) < 2:
        (n_t, w_t, c_t), (n_r, w_r, c_r) = runs["torch"][0], runs["ray"][0]
        print(f"one size only: ratio Ray/DataLoader {(n_r / w_r) / (n_t / w_t):.2f} wall, "
              f"{(n_r / c_r) / (n_t / c_t):.2f} CPU-s")
        emit("Ray Data decode+resample+crop", "segments/s", n_r / w_r, "webdataset + DataLoader", n_t / w_t)
        return
    fits = {side: {"wall": fit([(n, w) for n, w, _ in r]), "cpu": fit([(n, c) for n, _, c in r])}
            for side, r in runs.items()}
    for side, name in (("torch", "webdataset+DataLoader"), ("ray", "Ray Data")):
        (wf, wp), (cf, cp) = fits[side]["wall"], fits[side]["cpu"]
        print(f"{name:22s}: wall {wf:.2f} s + {1000 * wp:.2f} ms/segment; CPU {cf:.2f} s + {1000 * cp:.2f} ms/segment")
    wall_ratio = fits["torch"]["wall"][1] / fits["ray"]["wall"][1]
    cpu_ratio = fits["torch"]["cpu"][1] / fits["ray"]["cpu"][1]
    print(f"steady-state ratio Ray/DataLoader: {wall_ratio:.2f} wall, {cpu_ratio:.2f} CPU-s")
    emit("Ray Data decode+resample+crop, steady state", "segments/s", 1 / fits["ray"]["wall"][1],
         "webdataset + DataLoader", 1 / fits["torch"]["wall"][1])
    emit("Ray Data decode+resample+crop, steady state CPU", "CPU-ms/segment", 1000 * fits["ray"]["cpu"][1],
         "webdataset + DataLoader", 1000 * fits["torch"]["cpu"][1], higher_is_better=False)
    emit("Ray Data decode+resample+crop, fixed cost (workers warm)", "s", fits["ray"]["wall"][0],
         "webdataset + DataLoader", fits["torch"]["wall"][0], higher_is_better=False)


if __name__ == "__main__":
    main()
