"""Tokenization throughput and memory.

1. Audio-seconds tokenized per second by the Ray job (``run_tokenize``: actor pool, whole shards) beside
   a bare loop in a fresh process (``Codec.encode`` over the same decoded tracks, same thread count), and the
   ratio.
2. Peak RSS of tokenizing one shard holding a single 1-minute vs 60-minute track (each in a fresh
   subprocess running the ShardTokenizer stage without Ray: read + decode + encode + write; the shard is
   written beforehand by the parent).

    python benchmarks/tokenize_throughput.py --tracks 6 --seconds 30 --threads 2 --rss-minutes 1 60

3. With ``--real-music DIR``: ``--minutes`` (default 30) of real music (FLAC shards made by the project's
   prepare transcoder, tracks in name order), four runs back to back, ``--repeats`` rounds: the bare loop
   in a fresh process with glibc's malloc defaults and with the job's malloc settings
   (``codec.allocator``), the Ray job, and the job with ``compute.tune_malloc=false``; the round with the
   median steady-state ratio (job / bare loop, same malloc settings) counts. Steady state is the audio of
   every shard after the first finished one over the time from the first to the last shard's completion (the job's done-marker
   mtimes), so start-up (ray.init, actor start, model load) is not in it; start-up is reported apart. Plus
   the cost of a 3 s track against its length-proportional share of a 30 s one (bare ``Codec.encode``).

    python benchmarks/tokenize_throughput.py --real-music ~/.cache/real-music --minutes 30 --rss-minutes

Prints a JSON report (and a short table) to stdout.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from report import emit, init_ray  # noqa: E402  (benchmarks/report.py; this folder is on sys.path)

from pipelines.common import shard_io as tio  # noqa: E402
from pipelines.common.synthetic import music_clip  # noqa: E402

RATE, CHANNELS = 44100, 2


def flac_bytes(seconds: float, seed: int) -> bytes:
    """A 44.1 kHz stereo FLAC of music-like audio, generated a minute at a time to bound memory."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", RATE, CHANNELS, format="FLAC") as f:
        left, i = seconds, 0
        while left > 0:
            part = min(60.0, left)
            f.write(music_clip(part, RATE, CHANNELS, seed=seed * 1000 + i))
            left -= part
            i += 1
    return buf.getvalue()


def write_corpus(root: Path, tracks: int, seconds: float, per_shard: int) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(0, tracks, per_shard):
        members = {}
        for i in range(s, min(s + per_shard, tracks)):
            members[f"track{i:04d}.flac"] = flac_bytes(seconds, seed=i)
        path = root / f"bench-{s // per_shard:06d}.tar"
        path.write_bytes(tio.tar_bytes(members))
        paths.append(path)
    return paths


def write_real_corpus(src: Path, root: Path, minutes: float, per_shard: int) -> tuple[list[Path], float]:
    """Shards of real tracks (name order) transcoded by ``pipelines.prepare.stage.transcode`` until
    ``minutes`` of audio; returns the shard paths and the audio seconds."""
    from pipelines.common.audio_decode import Skip
    from pipelines.prepare.stage import transcode

    root.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {}
    paths, total, n = [], 0.0, 0
    for path in sorted(src.iterdir()):
        if total >= minutes * 60:
            break
        with open(path, "rb") as f:
            done = transcode(f)
        if isinstance(done, Skip):
            continue
        flac, facts = done
        members[f"{path.stem}.flac"] = flac
        members[f"{path.stem}.json"] = json.dumps(facts).encode()
        total += facts["duration"]
        n += 1
        if n % per_shard == 0:
            paths.append(root / f"real-{len(paths):06d}.tar")
            paths[-1].write_bytes(tio.tar_bytes(members))
            members = {}
    if members:
        paths.append(root / f"real-{len(paths):06d}.tar")
        paths[-1].write_bytes(tio.tar_bytes(members))
    return paths, total


class ProcessTreeCPU:
    """CPU seconds (user + system) of this process and all its descendants while it runs, split into the
    tokenize actor (``ray::...ShardTokenizer...``), this driver, and Ray's other processes (raylet, GCS,
    agents, Ray Data's internal actors).

    Descendants are sampled every ``interval`` s (a process that ends between two samples loses at most its
    last ``interval``); this process's own CPU is counted from when the sampler starts. Sampling is an
    observer the bare loop does not carry: each sample reads /proc for a dozen processes on a core the
    actor's torch threads use. In 5 rounds the job's median ratio to the bare loop was 0.94 sampled every
    0.2 s and 0.96 every 5 s (the 0.2 s run lower in only 2 of 5 rounds: within the noise, but a cost the bare
    loop does not pay), so the default samples rarely; Ray's processes live the whole run, and the last
    sample is taken at ``stop``.
    """

    def __init__(self, interval: float = 2.0):
        import threading

        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._start = sum(self._me.cpu_times()[:2])
        self._seen: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for proc in self._me.children(recursive=True):
            try:
                self._seen[proc.pid] = (" ".join(proc.cmdline()), sum(proc.cpu_times()[:2]))
            except self._psutil.Error:
                pass

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def stop(self) -> dict:
        """Stop sampling; CPU seconds ``{"actor", "driver", "ray_other"}`` and ``by_process``: Ray's other
        processes' CPU seconds by program (``raylet``, ``gcs_server``, ``dashboard/agent.py``, ``ray::Actor``)."""
        self._sample()
        self._stop.set()
        self._thread.join()
        actor = sum(cpu for cmd, cpu in self._seen.values() if "ShardTokenizer" in cmd)
        by_process: dict[str, float] = {}
        for cmd, cpu in self._seen.values():
            if "ShardTokenizer" not in cmd:
                name = program(cmd)
                by_process[name] = by_process.get(name, 0.0) + cpu
        return {"actor": actor, "driver": sum(self._me.cpu_times()[:2]) - self._start,
                "ray_other": sum(by_process.values()), "by_process": by_process}


def program(cmdline: str) -> str:
    """A short name for a process: its Ray task/actor name, else its script or executable's last two parts."""
    words = cmdline.split()
    if not words:
        return "?"
    if words[0].startswith("ray::"):
        return words[0]
    script = next((w for w in words[1:] if w.endswith(".py")), words[0])
    return "/".join(Path(script).parts[-2:])


def steady_state(done: list[tuple[float, float]], start: float) -> dict:
    """Steady state and start-up of one run from its shards' completion times.

    ``done``: ``(time the shard was finished, its audio seconds)`` per shard; ``start``: when the run began
    (same clock). Steady state is the audio of every shard after the first finished one over the time from
    the first to the last completion: no start-up (ray.init, actor start, model and teacher build all end
    before the first shard can) is in it. ``first_shard_s`` is when the first shard was done: for the job it
    holds the start-up, so the job's minus the bare loop's (same first shard) is what starting costs.
    ``audio_s_per_s`` is the whole run's rate, start-up included.
    """
    done = sorted(done)
    wall, first = done[-1][0] - start, done[0][0] - start
    # one shard: no steady state to tell apart from start-up
    rate = sum(s for _, s in done[1:]) / (done[-1][0] - done[0][0]) if len(done) > 1 else float("nan")
    return {"steady_audio_s_per_s": rate, "wall_s": wall, "first_shard_s": first,
            "audio_s_per_s": sum(s for _, s in done) / wall}


def short_track_cost(threads: int, src: Path | None) -> dict:
    """Bare ``Codec.encode`` wall of a 3 s and a 30 s excerpt (fastest of several runs each); ``ratio`` = 3 s
    cost / (3/30 of the 30 s cost). Malloc as in the job's actors (``codec.tune_malloc``): with glibc's
    defaults the 30 s encode alone re-faults its activations, which flatters the 3 s track."""
    import torch

    from codec import Codec, tune_malloc

    tune_malloc()  # this process's last measurement: nothing after it runs here

    torch.set_num_threads(threads)
    codec = Codec.from_pretrained("tiny")
    if src is not None:
        from pipelines.common.audio_decode import AUDIO_SUFFIXES

        tracks = [p for p in src.iterdir() if p.suffix.lower().lstrip(".") in AUDIO_SUFFIXES]  # not the .done file
        audio, sr = sf.read(str(max(tracks, key=lambda p: sf.info(str(p)).duration)), dtype="float32",
                            always_2d=True)
        audio = audio.T
    else:
        sr, audio = RATE, music_clip(30.0, RATE, CHANNELS, seed=0).T
    long_, short = audio[:, : 30 * sr], audio[:, 10 * sr: 13 * sr]
    codec.encode(short, sample_rate=sr)  # build the teacher and resampler outside the timing
    t = {}
    for name, x, reps in (("3s", short, 7), ("30s", long_, 3)):  # fastest run of each: the least disturbed
        runs = []
        for _ in range(reps):
            t0 = time.perf_counter()
            codec.encode(x, sample_rate=sr)
            runs.append(time.perf_counter() - t0)
        t[name] = min(runs)
    return {"wall_3s": t["3s"], "wall_30s": t["30s"], "ratio": t["3s"] / (t["30s"] * 3 / 30)}


def bench_real(args) -> None:
    """Item 3: real music, start-up and steady state apart (from every shard's completion time)."""
    src = Path(args.real_music).expanduser()
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "in"
        shards, seconds = write_real_corpus(src, inp, args.minutes, args.per_shard)
        # run the sides back to back, ``--repeats`` rounds; the round with the median ratio counts (the load
        # of a shared machine swings by more than the gap measured, but mostly alike within a round)
        plains, bares, rays, untuned = [], [], [], []
        for i in range(args.repeats):
            plains.append(bench_bare(shards, args.threads))
            bares.append(bench_bare(shards, args.threads, tuned_malloc=True))
            rays.append(bench_ray(inp, Path(tmp) / f"out{i}", args.threads))
            untuned.append(bench_ray(inp, Path(tmp) / f"untuned{i}", args.threads, tune_malloc=False))
            print(f"  run {i + 1}: steady audio-s/s: bare loop {plains[-1]['steady_audio_s_per_s']:.2f} (glibc "
                  f"malloc defaults), {bares[-1]['steady_audio_s_per_s']:.2f} (tuned malloc); Ray job "
                  f"{rays[-1]['steady_audio_s_per_s']:.2f} ({untuned[-1]['steady_audio_s_per_s']:.2f} with "
                  f"compute.tune_malloc=false), first shard done at {rays[-1]['first_shard_s']:.1f} s "
                  f"against {bares[-1]['first_shard_s']:.1f} s; walls {plains[-1]['wall_s']:.1f} / "
                  f"{bares[-1]['wall_s']:.1f} / {rays[-1]['wall_s']:.1f} s", flush=True)
    ratios = [r["steady_audio_s_per_s"] / b["steady_audio_s_per_s"] for b, r in zip(bares, rays, strict=True)]
    median = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
    plain, bare, ray_, untuned_ = plains[median], bares[median], rays[median], untuned[median]
    print("  steady-state ratio (job / bare loop, both tuned malloc) of every run: "
          + " / ".join(f"{x:.2f}" for x in ratios) + f"; the median run ({median + 1}) counts; against the "
          "bare loop with glibc's defaults: " + " / ".join(
              f"{r['steady_audio_s_per_s'] / p['steady_audio_s_per_s']:.2f}" for p, r in zip(plains, rays, strict=True)),
          flush=True)
    top = sorted(ray_["by_process"].items(), key=lambda kv: -kv[1])[:6]
    print(f"  CPU-s besides the actor: driver {ray_['driver_cpu_s']:.1f}; "
          + ", ".join(f"{name} {cpu:.1f}" for name, cpu in top), flush=True)
    ratio = ratios[median]
    print(f"{seconds / 60:.1f} min of real music in {len(shards)} shards, steady state (after the first shard "
          f"done): Ray job {ray_['steady_audio_s_per_s']:.2f} audio-s/s, bare loop {bare['steady_audio_s_per_s']:.2f} "
          f"(ratio {ratio:.2f}); first shard done at {ray_['first_shard_s']:.1f} s (Ray job) and "
          f"{bare['first_shard_s']:.1f} s (bare loop): start-up {ray_['first_shard_s'] - bare['first_shard_s']:.1f} s",
          flush=True)
    emit("tokenize job, real music, steady state", "audio s/s", ray_["steady_audio_s_per_s"],
         "bare loop (read + decode + Codec.encode), same malloc settings", bare["steady_audio_s_per_s"])
    emit("tokenize job, real music, steady state, against an untuned loop", "audio s/s", ray_["steady_audio_s_per_s"],
         "bare loop with glibc's malloc defaults (no codec.tune_malloc)", plain["steady_audio_s_per_s"])
    emit("tokenize job, real music, steady state, malloc tuned or not", "audio s/s", ray_["steady_audio_s_per_s"],
         "same job with compute.tune_malloc=false", untuned_["steady_audio_s_per_s"])
    emit("tokenize job, real music, time to the first shard done (start-up: ray.init + actor + model)", "s",
         ray_["first_shard_s"], "bare loop, same shard (model built before the clock)", bare["first_shard_s"],
         higher_is_better=False)
    # Where a wall-time gap goes: the actor's own CPU per audio-second against the bare loop's, and the CPU
    # that the driver and Ray's other processes (raylet, GCS, agents, Ray Data's actors) take meanwhile.
    actor_cpu, bare_cpu = ray_["actor_cpu_s"] / seconds, bare["cpu_s"] / seconds
    other = ray_["other_cpu_s"] / ray_["wall_s"]
    print(f"CPU-s per audio-s over the whole run: tokenize actor {actor_cpu:.4f} (model load included), bare loop "
          f"{bare_cpu:.4f}; driver + Ray's other processes {other:.2f} of a core while the job runs", flush=True)
    emit("tokenize actor, real music, CPU-s (whole run)", "CPU-s per audio-s", actor_cpu,
         "bare loop: read + decode + Codec.encode", bare_cpu, higher_is_better=False)
    emit("driver + Ray's other processes during the job", "cores", other, "none in the bare loop", 0.0,
         higher_is_better=False)
    short = short_track_cost(args.threads, src)
    print(f"3 s track: {short['wall_3s']:.3f} s vs 30 s track {short['wall_30s']:.3f} s: "
          f"{short['ratio']:.2f}x its length-proportional share", flush=True)
    emit("Codec.encode of a 3 s track vs its length share of 30 s", "x", short["ratio"], "length-proportional",
         1.0, higher_is_better=False)


def bench_ray(inp: Path, out: Path, threads: int, tune_malloc: bool = True) -> dict:
    """The tokenize job over ``inp`` (ray.init included); each shard's completion time is its done marker's
    mtime. ``tune_malloc``: ``compute.tune_malloc``."""
    import ray

    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import run_tokenize

    cpu = ProcessTreeCPU()
    start = time.time()
    init_ray(num_cpus=threads)
    try:
        cfg = load_tokenize_config(None, ["model=tiny", f"input={inp}", f"output={out}", "progress=false",
                                          "tracking.enabled=false", f"compute.num_cpus={threads}",
                                          f"compute.torch_threads={threads}", "compute.actors=1",
                                          f"compute.tune_malloc={str(tune_malloc).lower()}"])
        result = run_tokenize(cfg, log=lambda _: None)
        used = cpu.stop()  # before shutdown, which would end Ray's processes between two samples
    finally:
        ray.shutdown()
    done = [(os.stat(tio.done_url(str(out), name)).st_mtime, m["seconds"])
            for name, m in tio.read_done(str(out)).items()]
    return {**steady_state(done, start), "audio_seconds": result.seconds, "actor_cpu_s": used["actor"],
            "other_cpu_s": used["driver"] + used["ray_other"], "driver_cpu_s": used["driver"],
            "by_process": used["by_process"]}


def bench_bare(shards: list[Path], threads: int, tuned_malloc: bool = False) -> dict:
    """:func:`bare_loop` in a fresh process, as the job's actor is one (malloc's state, which decides how
    often freed activations are faulted in again, then starts alike). ``tuned_malloc``: the process starts
    with :func:`codec.allocator.malloc_env`, the job actors' default (``compute.tune_malloc``); otherwise
    with glibc's defaults, as a user's own loop runs unless it calls ``codec.tune_malloc()``."""
    from codec.allocator import malloc_env

    env = {k: v for k, v in os.environ.items() if k not in malloc_env()}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **(malloc_env() if tuned_malloc else {})})
    out = subprocess.run([sys.executable, __file__, "--bare-child", *map(str, shards), "--threads", str(threads)],
                         env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bare_loop(shards: list[Path], threads: int) -> dict:
    """A bare loop over the shards on this process's main thread: read, decode, ``Codec.encode`` each track
    (the job also writes; this loop does not). The model and its teacher are built before the clock starts.
    Timing as :func:`steady_state`; ``cpu_s`` is the whole loop's.
    """
    import torch

    from codec import Codec
    from pipelines.tokenize.stage import probe_track

    torch.set_num_threads(threads)
    codec = Codec.from_pretrained("tiny")
    with open(shards[0], "rb") as f:
        first = probe_track(next(iter(tio.iter_samples(f))))
    first.decode()
    codec.encode(first.audio[:, :first.sample_rate], sample_rate=first.sample_rate)  # build the teacher first
    seconds, done = 0.0, []
    start, c0 = time.time(), time.process_time()
    for shard in shards:
        with open(shard, "rb") as f:
            tracks = [probe_track(s) for s in tio.iter_samples(f)]
        shard_seconds = 0.0
        for t in tracks:
            t.decode()
            codec.encode(t.audio, sample_rate=t.sample_rate)
            shard_seconds += t.seconds
            t.audio = None
        seconds += shard_seconds
        done.append((time.time(), shard_seconds))
    return {**steady_state(done, start), "audio_seconds": seconds, "cpu_s": time.process_time() - c0}


def peak_rss_mib() -> float:
    """Peak resident set of this process (VmHWM; unlike ru_maxrss it is not inherited across fork+exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(shard: str, minutes: float, threads: int, tracks: int = 1) -> None:
    """Subprocess body: tokenize ``shard`` (``tracks`` tracks of ``minutes``) and print peak RSS (MiB)."""
    import torch

    from pipelines.tokenize.stage import ShardTokenizer

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = {"uri": "tiny", "load_uri": "tiny", "kind": "preset", "name": None, "version": "preset:tiny"}
        stage = ShardTokenizer(model, tmp, "bench", torch_threads=threads)
        before = peak_rss_mib()
        t0 = time.perf_counter()
        row = stage({"shard": np.array([shard])})
        wall = time.perf_counter() - t0
        assert row["ok"][0], row["error"][0]
    print(json.dumps({"minutes": minutes, "tracks": tracks, "peak_rss_mib": round(peak_rss_mib(), 1),
                      "rss_after_model_load_mib": round(before, 1), "wall_s": round(wall, 1),
                      "audio_s_per_s": round(tracks * minutes * 60 / wall, 2)}))


def measure_rss(minutes: float, threads: int, timeout: float, tracks: int = 1) -> dict:
    """Run :func:`rss_child` on one shard of ``tracks`` tracks in a subprocess, polling its VmHWM from
    outside. A child still running after ``timeout`` s is stopped; its peak so far is reported with
    ``completed: false`` (the peak is reached while decoding and resampling a track, before the window loop)."""
    from codec.allocator import malloc_env

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), **malloc_env()}  # as the job's actor
    tmp = tempfile.TemporaryDirectory()
    shard = write_corpus(Path(tmp.name), tracks, minutes * 60, tracks)[0]
    proc = subprocess.Popen([sys.executable, __file__, "--rss-child", str(minutes), "--shard", str(shard),
                             "--threads", str(threads), "--shard-tracks", str(tracks)],
                            env=env, stdout=subprocess.PIPE, text=True)
    peak, t0 = 0.0, time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < timeout:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                peak = max([peak] + [int(x.split()[1]) / 1024 for x in f if x.startswith("VmHWM:")])
        except OSError:
            pass
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        tmp.cleanup()
        return {"minutes": minutes, "tracks": tracks, "peak_rss_mib": round(peak, 1), "completed": False,
                "observed_s": round(time.perf_counter() - t0, 1)}
    tmp.cleanup()
    out = json.loads(proc.stdout.read().strip().splitlines()[-1])
    return {**out, "completed": True}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tracks", type=int, default=6)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--per-shard", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rss-minutes", type=float, nargs="*", default=[1.0, 60.0])
    p.add_argument("--rss-timeout", type=float, default=3600.0, help="stop an RSS run after this many seconds")
    p.add_argument("--rss-shard-tracks", type=int, default=20,
                   help="also measure a shard of this many 1-minute tracks (0: skip)")
    p.add_argument("--shard-tracks", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rss-child", type=float, help=argparse.SUPPRESS)
    p.add_argument("--shard", help=argparse.SUPPRESS)
    p.add_argument("--bare-child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--real-music", help="folder of real music: run the real-music steady-state benchmark (3.)")
    p.add_argument("--minutes", type=float, default=30.0, help="--real-music: audio minutes of the corpus")
    p.add_argument("--repeats", type=int, default=3,
                   help="--real-music: rounds of runs (bare loop and Ray job, each with and without the malloc "
                        "settings); the round with the median ratio counts")
    args = p.parse_args()
    if args.bare_child:
        print(json.dumps(bare_loop([Path(s) for s in args.bare_child], args.threads)))
        return
    if args.real_music:
        bench_real(args)
        if not args.rss_minutes:
            return
    if args.rss_child is not None:
        rss_child(args.shard, args.rss_child, args.threads, args.shard_tracks)
        return
    report: dict = {"threads": args.threads, "tracks": args.tracks, "track_seconds": args.seconds,
                    "input": f"{RATE} Hz stereo FLAC", "model": "tiny"}
    with tempfile.TemporaryDirectory() as tmp:
        shards = write_corpus(Path(tmp) / "in", args.tracks, args.seconds, args.per_shard)
        report["bare"] = bench_bare(shards, args.threads)
        report["ray"] = bench_ray(Path(tmp) / "in", Path(tmp) / "out", args.threads)
    report["ray_over_bare"] = report["ray"]["audio_s_per_s"] / report["bare"]["audio_s_per_s"]
    report["rss"] = [measure_rss(m, args.threads, args.rss_timeout) for m in args.rss_minutes]
    if args.rss_shard_tracks:
        report["rss_shard"] = measure_rss(1.0, args.threads, args.rss_timeout, tracks=args.rss_shard_tracks)
    print(json.dumps(report, indent=1))
    print(f"bare loop: {report['bare']['audio_s_per_s']:.2f} audio-s/s | Ray job: {report['ray']['audio_s_per_s']:.2f} "
          f"audio-s/s (incl. actor start) | ratio {report['ray_over_bare']:.2f}")
    for r in report["rss"]:
        speed = f"{r['audio_s_per_s']:.2f} audio-s/s" if r["completed"] else f"stopped after {r['observed_s']} s"
        print(f"{r['minutes']:g}-min track: peak RSS {r['peak_rss_mib']:.0f} MiB ({speed})")
    emit("tokenize job throughput (Ray actor pool)", "audio s/s", report["ray"]["audio_s_per_s"],
         "bare loop, fresh process, glibc malloc defaults", report["bare"]["audio_s_per_s"])
    rss = sorted(report["rss"], key=lambda r: r["minutes"])
    if len(rss) >= 2:
        emit(f"tokenize peak RSS, {rss[-1]['minutes']:g}-min track", "MiB", rss[-1]["peak_rss_mib"],
             f"{rss[0]['minutes']:g}-min track", rss[0]["peak_rss_mib"], higher_is_better=False)
    if "rss_shard" in report:
        one = next((r for r in rss if r["minutes"] == 1.0), None) or measure_rss(1.0, args.threads, args.rss_timeout)
        many = report["rss_shard"]
        print(f"shard of {many['tracks']} x 1-min tracks: peak RSS {many['peak_rss_mib']:.0f} MiB")
        emit(f"tokenize peak RSS, shard of {many['tracks']} 1-min tracks", "MiB", many["peak_rss_mib"],
             "shard of one 1-min track", one["peak_rss_mib"], higher_is_better=False)


if __name__ == "__main__":
    main()
