"""Decode + resample + crop throughput: the Ray Data stage vs a plain webdataset + DataLoader loader.

Both loaders run the same per-track work (``pipelines.data.segments.cut_segments``) on the same synthetic
shards; the script prints segments/s of each and their ratio.

    python benchmarks/data_throughput.py --tracks 48 --seconds 20 --workers 2
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time

import numpy as np
import soundfile as sf
from report import emit  # benchmarks/report.py (this script's folder is on sys.path)


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


def run_ray(paths: list[str], args) -> tuple[int, float]:
    import ray

    from pipelines.data.config import load_data_config
    from pipelines.data.dataset import build_segment_dataset

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    cfg = load_data_config({"shards": paths, "segment_seconds": args.segment_seconds,
                            "segments_per_track": args.segments, "val_fraction": 0.0,
                            "cpu": {"num_cpus": 1.0, "batch_size": 2, "read_num_cpus": 0.25}})
    warm = load_data_config({**{"shards": paths[:1]}, "segment_seconds": args.segment_seconds})
    build_segment_dataset(warm, split=None).take(1)  # start the workers and import torch there (not timed)
    t0 = time.perf_counter()
    n = 0
    for batch in build_segment_dataset(cfg, split=None).iter_batches(batch_size=16, batch_format="numpy"):
        n += len(batch["audio"])
    return n, time.perf_counter() - t0


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


def run_torch(paths: list[str], args) -> tuple[int, float]:
    import functools

    import torch
    import webdataset as wds

    from pipelines.data.segments import SegmentSpec, segment_samples

    spec = SegmentSpec(length=segment_samples(args.segment_seconds), per_track=args.segments)
    ds = (wds.WebDataset(paths, shardshuffle=False, nodesplitter=wds.split_by_node,
                         workersplitter=wds.split_by_worker)
          .map(functools.partial(_segments, spec=spec)))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.workers)
    t0 = time.perf_counter()
    n = sum(len(segs) for segs in loader)
    return n, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=20.0, help="track length")
    parser.add_argument("--segment-seconds", type=float, default=5.0)
    parser.add_argument("--segments", type=int, default=4, help="segments per track")
    parser.add_argument("--workers", type=int, default=2, help="CPUs for Ray / DataLoader workers")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        paths = write_shards(root, args.tracks, args.seconds)
        n_torch, t_torch = run_torch(paths, args)
        n_ray, t_ray = run_ray(paths, args)
    print(f"shards={len(paths)} tracks={args.tracks} x {args.seconds:.0f}s, {args.segments} x "
          f"{args.segment_seconds:.1f}s segments, {args.workers} workers")
    print(f"webdataset+DataLoader: {n_torch} segments in {t_torch:.2f}s = {n_torch / t_torch:.1f} segments/s")
    print(f"Ray Data:              {n_ray} segments in {t_ray:.2f}s = {n_ray / t_ray:.1f} segments/s")
    print(f"ratio Ray/DataLoader:  {(n_ray / t_ray) / (n_torch / t_torch):.2f}")
    emit("Ray Data decode+resample+crop", "segments/s", n_ray / t_ray, "webdataset + DataLoader",
         n_torch / t_torch)


if __name__ == "__main__":
    main()
