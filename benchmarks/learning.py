"""Does the codec learn? Train on real music, evaluate held-out tracks, print the targets of issue 14.

Trains the codec preset as shipped (semantic fusion and loss, quantizer dropout, discriminators: nothing
switched off) through the project's own ``GANTrainStep`` on random crops of the training tracks, for at most
``--minutes`` of wall time. Tracks are split by name: the ``--eval-tracks`` held-out tracks are never
trained on. Every ``--eval-every`` steps it evaluates one 10 s excerpt of each held-out track
(:func:`codec.diagnostics.evaluate_learning`): codes used and perplexity per RVQ layer, mel distance and
SI-SDR at n_q 1/2/4/8, identification accuracy, the constant-codes baseline; Opus 6 kbps on the same
excerpts once. One table with the targets beside the measured values, the same numbers in an MLflow run
(sqlite store under ``--out`` unless ``--mlflow-uri``) and a plot (``--out``/learning.png).

    make learn                                  # = python benchmarks/learning.py (30 min, 2 threads)
    python benchmarks/learning.py --minutes 6 --eval-every 50 --override model.latent_norm=false

The corpus is ``~/.cache/real-music`` (``../shared/music/real_music.sh``); decoded 24 kHz mono tracks are
cached as .npy under ``--cache``. Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.audio import read_audio, resample, to_mono  # noqa: E402
from codec.builders import build_discriminator, build_generator, build_teacher, build_train_step  # noqa: E402
from codec.config import config_to_dict, load_codec_config  # noqa: E402
from codec.diagnostics import LearningReport, evaluate_learning  # noqa: E402
from codec.metrics import si_sdr  # noqa: E402
from codec.nn.loss import MultiScaleMelLoss  # noqa: E402
from pipelines.common.audio_decode import AUDIO_SUFFIXES  # noqa: E402

N_QS = (1, 2, 4, 8)


@dataclass
class Targets:
    """Issue 14's targets (fractions of codebook size, perplexities, ratios)."""

    min_usage: float = 0.10  # every layer, at the end
    min_usage_any_eval: float = 0.05  # every layer, every evaluation after step 50
    ppl_l1: float = 16.0
    ppl_other: float = 32.0
    identification: float = 0.75
    min_excerpts: int = 16
    mel_gain_8_vs_1: float = 0.05  # n_q 8 at least 5 % below n_q 1
    mel_gain_vs_constant: float = 0.15  # n_q 8 at least 15 % below the constant-codes baseline


# ---------------------------------------------------------------------------------------------- corpus
def load_corpus(folder: Path, sample_rate: int, cache: Path) -> dict[str, np.ndarray]:
    """Every track of ``folder`` as float32 mono at ``sample_rate`` (decoded once, then read from ``cache``)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower().lstrip(".") in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"no audio in {folder}: run ../shared/music/real_music.sh first")
    cache.mkdir(parents=True, exist_ok=True)
    tracks = {}
    for path in files:
        cached = cache / f"{path.stem}.{sample_rate}.npy"
        if not cached.is_file():
            audio, sr = read_audio(path)
            np.save(cached, resample(to_mono(audio), sr, sample_rate).reshape(-1).numpy().astype(np.float32))
        tracks[path.stem] = np.load(cached)
    return tracks


def split_tracks(names: list[str], n_eval: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out) track names: a seeded shuffle, the last ``n_eval`` held out."""
    order = sorted(names)
    random.Random(seed).shuffle(order)
    if n_eval >= len(order):
        raise SystemExit(f"--eval-tracks {n_eval} leaves no training track out of {len(order)}")
    return sorted(order[:-n_eval]), sorted(order[-n_eval:])


def excerpts(tracks: list[np.ndarray], samples: int) -> torch.Tensor:
    """One excerpt of ``samples`` from the middle of each track (zero-padded if shorter): [N, 1, samples]."""
    out = np.zeros((len(tracks), 1, samples), dtype=np.float32)
    for i, t in enumerate(tracks):
        start = max(0, (len(t) - samples) // 2)
        piece = t[start:start + samples]
        out[i, 0, :len(piece)] = piece
    return torch.from_numpy(out)


class CropSampler:
    """Random crops of training tracks, skipping near-silent ones. Batches are [B, 1, samples]."""

    def __init__(self, tracks: list[np.ndarray], samples: int, seed: int, min_rms: float = 1e-3):
        self.tracks = [t for t in tracks if len(t) >= samples]
        self.samples = samples
        self.min_rms = min_rms
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> torch.Tensor:
        out = np.zeros((size, 1, self.samples), dtype=np.float32)
        for i in range(size):
            for _ in range(20):
                t = self.tracks[self.rng.integers(len(self.tracks))]
                start = self.rng.integers(len(t) - self.samples + 1)
                crop = t[start:start + self.samples]
                if np.sqrt(np.mean(crop ** 2)) >= self.min_rms:
                    break
            out[i, 0] = crop
        return torch.from_numpy(out)


# ---------------------------------------------------------------------------------------------- baselines
def opus_baseline(audio: torch.Tensor, sample_rate: int, kbps: float, mel: MultiScaleMelLoss,
                  reference_mels: list[torch.Tensor]) -> dict[str, float] | str:
    """Mean mel distance / SI-SDR of Opus at ``kbps`` on the excerpts, or why it was skipped."""
    try:
        from pipelines.evaluate.tools import find_opus_encoder
    except ImportError as e:  # pipelines/ is optional here
        return f"Opus baseline skipped: {e}"
    encoder, why = find_opus_encoder()
    if encoder is None:
        return why
    decoded = np.stack([encoder.roundtrip(a[0].numpy(), sample_rate, kbps)[0] for a in audio])
    decoded = torch.from_numpy(decoded)[:, None]
    return {"mel": float(mel.pairwise(decoded, reference_mels).diagonal().mean()),
            "si_sdr": float(si_sdr(decoded, audio).mean()), "kbps": kbps}


# ---------------------------------------------------------------------------------------------- verdict
def check_targets(history: list[tuple[int, LearningReport]], usage_history: list[tuple[int, LearningReport]],
                  t: Targets) -> list[tuple[str, str, str, bool]]:
    """(target, wanted, measured, met) rows from the final full evaluation and every evaluation's codes."""
    step, r = history[-1]
    ppl, usage = r.perplexity, r.usage
    late = [(s, min(h.usage)) for s, h in history + usage_history if s > 50]
    worst_late = min(late, key=lambda x: x[1]) if late else (step, min(usage))
    mel = [r.mel[n] for n in N_QS if n in r.mel]
    n_top = max(r.mel)
    gain_8_1 = 1 - r.mel[n_top] / r.mel[1]
    gain_const = 1 - r.mel[n_top] / r.constant_mel
    fmt = lambda xs, f="{:.0%}": " ".join(f.format(x) for x in xs)  # noqa: E731
    return [
        ("codes used per layer (end)", f">= {t.min_usage:.0%} each", fmt(usage), min(usage) >= t.min_usage),
        ("perplexity L1 (end)", f">= {t.ppl_l1:g}", f"{ppl[0]:.1f}", ppl[0] >= t.ppl_l1),
        ("perplexity L2..L8 (end)", f">= {t.ppl_other:g} each", fmt(ppl[1:], "{:.0f}"),
         all(p >= t.ppl_other for p in ppl[1:])),
        ("min codes used, any eval after step 50", f">= {t.min_usage_any_eval:.0%}",
         f"{worst_late[1]:.1%} (step {worst_late[0]})", worst_late[1] >= t.min_usage_any_eval),
        (f"identification at n_q {n_top}", f">= {t.identification:.0%} of >= {t.min_excerpts}",
         f"{r.identification[n_top]:.0%} of {r.n_excerpts}",
         r.identification[n_top] >= t.identification and r.n_excerpts >= t.min_excerpts),
        ("mel strictly decreasing n_q 1>2>4>8", "yes", " > ".join(f"{m:.3f}" for m in mel),
         all(a > b for a, b in zip(mel, mel[1:], strict=False))),
        (f"mel n_q {n_top} below n_q 1", f">= {t.mel_gain_8_vs_1:.0%}", f"{gain_8_1:.1%}",
         gain_8_1 >= t.mel_gain_8_vs_1),
        (f"mel n_q {n_top} below constant codes", f">= {t.mel_gain_vs_constant:.0%}",
         f"{gain_const:.1%} ({r.mel[n_top]:.3f} vs {r.constant_mel:.3f})", gain_const >= t.mel_gain_vs_constant),
    ]


def stretch_rows(r: LearningReport, opus: dict[str, float] | str) -> list[tuple[str, str, str]]:
    n_top = max(r.mel)
    rows = [("identification (stretch)", "100%", f"{r.identification[n_top]:.0%}"),
            (f"mel n_q {n_top} below n_q 1 (stretch)", ">= 10%", f"{1 - r.mel[n_top] / r.mel[1]:.1%}")]
    if isinstance(opus, dict):
        rows.append((f"Opus {opus['kbps']:g} kbps mel / SI-SDR (3x our bitrate)", "reference",
                     f"{opus['mel']:.3f} / {opus['si_sdr']:+.1f} dB vs ours {r.mel[n_top]:.3f} / "
                     f"{r.si_sdr[n_top]:+.1f} dB"))
    else:
        rows.append(("Opus 6 kbps", "reference", opus))
    return rows


def print_eval(step: int, elapsed: float, r: LearningReport) -> None:
    head = (f"[eval] step {step:5d} {elapsed / 60:5.1f} min | codes used {' '.join(map(str, r.codes_used))} | "
            f"ppl {' '.join(f'{p:.0f}' for p in r.perplexity)}")
    if not r.mel:
        print(head, flush=True)
        return
    print(f"{head} | mel "
          f"{' / '.join(f'{r.mel[n]:.3f}' for n in r.mel)} (const {r.constant_mel:.3f}) | "
          f"SI-SDR {' / '.join(f'{r.si_sdr[n]:+.1f}' for n in r.si_sdr)} | "
          f"ident {' / '.join(f'{r.identification[n]:.0%}' for n in r.identification)} | "
          f"DC {max(r.dc_offset.values()):.3f} level {' / '.join(f'{r.level[n]:.2f}' for n in r.level)}", flush=True)


def plot(history: list[tuple[int, LearningReport]], usage_history: list[tuple[int, LearningReport]],
         opus: dict[str, float] | str, path: Path) -> Path | None:
    """Codes used per layer, mel distance per n_q (with baselines) and identification against step."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install 'muq-xcodec[eval]')")
        return None
    steps = [s for s, _ in history]
    codes = sorted(usage_history + history, key=lambda x: x[0])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for k in range(len(history[0][1].codes_used)):
        axes[0].plot([s for s, _ in codes], [r.codes_used[k] for _, r in codes], label=f"L{k + 1}")
    axes[0].set(title="codes used per layer (held-out)", xlabel="step", yscale="symlog")
    axes[0].legend(ncol=2, fontsize=7)
    for n in history[0][1].mel:
        axes[1].plot(steps, [r.mel[n] for _, r in history], label=f"n_q {n}")
    axes[1].plot(steps, [r.constant_mel for _, r in history], "k--", label="constant codes")
    if isinstance(opus, dict):
        axes[1].axhline(opus["mel"], color="gray", ls=":", label=f"Opus {opus['kbps']:g} kbps")
    axes[1].set(title="mel distance (held-out)", xlabel="step")
    axes[1].legend(fontsize=7)
    for n in history[0][1].identification:
        axes[2].plot(steps, [r.identification[n] for _, r in history], label=f"n_q {n}")
    axes[2].set(title="identification accuracy", xlabel="step", ylim=(0, 1.05))
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "real-music", help="folder of tracks")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "muq-xcodec" / "learning",
                   help="decoded-track cache")
    p.add_argument("--preset", default="small", help="codec preset or YAML (small: tiny with a 4x wider decoder)")
    p.add_argument("--override", action="append", default=[], help="codec config dotlist entry (repeatable)")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of training + evaluation")
    p.add_argument("--steps", type=int, default=100_000, help="stop after this many steps")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop-seconds", type=float, default=0.96, help="training crop (multiple of 0.04 s)")
    p.add_argument("--eval-every", type=int, default=50, help="codes used / perplexity on the held-out excerpts")
    p.add_argument("--full-eval-every", type=int, default=250,
                   help="also mel, SI-SDR, identification, constant codes (and always at the end)")
    p.add_argument("--eval-tracks", type=int, default=16, help="held-out tracks (one excerpt each)")
    p.add_argument("--eval-seconds", type=float, default=10.0)
    p.add_argument("--opus-kbps", type=float, default=6.0)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0, help="track split, crops and quantizer-dropout seed")
    p.add_argument("--out", type=Path, default=Path("outputs/learning"), help="plot, results.json, MLflow")
    p.add_argument("--mlflow-uri", default=None, help="tracking URI (default sqlite:///<out>/mlflow.db)")
    p.add_argument("--experiment", default="codec-learning")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = load_codec_config(args.preset, args.override)
    sr, hop = int(cfg.model.sample_rate), math.prod(cfg.model.encoder_rates)
    crop = round(args.crop_seconds * sr / hop) * hop
    eval_len = round(args.eval_seconds * sr / hop) * hop

    t0 = time.perf_counter()
    corpus = load_corpus(args.data.expanduser(), sr, args.cache.expanduser())
    train_names, eval_names = split_tracks(list(corpus), args.eval_tracks, args.seed)
    print(f"corpus: {len(corpus)} tracks ({sum(map(len, corpus.values())) / sr / 60:.0f} min) -> "
          f"{len(train_names)} train / {len(eval_names)} held-out; loaded in {time.perf_counter() - t0:.0f} s")
    sampler = CropSampler([corpus[n] for n in train_names], crop, args.seed)
    eval_audio = excerpts([corpus[n] for n in eval_names], eval_len)

    generator, discriminator, teacher = build_generator(cfg), build_discriminator(cfg), build_teacher(cfg)
    step_fn = build_train_step(cfg, generator, discriminator, teacher=teacher)
    with torch.no_grad():
        eval_semantic = torch.cat([teacher(eval_audio[i:i + 1, 0]) for i in range(len(eval_audio))])
    mel = MultiScaleMelLoss(sr)
    reference_mels = mel.spectrograms(eval_audio)
    opus = opus_baseline(eval_audio, sr, args.opus_kbps, mel, reference_mels)

    import mlflow

    uri = args.mlflow_uri or f"sqlite:///{(args.out / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)  # a script of its own: the fluent API is fine here
    if mlflow.get_experiment_by_name(args.experiment) is None:  # artifacts beside the store, never ./mlruns
        mlflow.create_experiment(args.experiment, artifact_location=(args.out / "mlartifacts").resolve().as_uri())
    mlflow.set_experiment(args.experiment)
    history: list[tuple[int, LearningReport]] = []  # full evaluations
    usage_history: list[tuple[int, LearningReport]] = []  # codes-only evaluations
    with mlflow.start_run(run_name=f"{cfg.name}-{args.minutes:g}min") as run:
        mlflow.log_params({"preset": args.preset, "overrides": " ".join(args.override) or "-", "batch": args.batch,
                           "crop_seconds": crop / sr, "minutes": args.minutes, "eval_tracks": len(eval_names),
                           "eval_seconds": eval_len / sr, "threads": args.threads, "seed": args.seed})
        mlflow.log_dict(config_to_dict(cfg), "codec_config.json")
        mlflow.log_dict({"train": train_names, "held_out": eval_names}, "split.json")
        if isinstance(opus, dict):
            mlflow.log_metrics({"opus_mel": opus["mel"], "opus_si_sdr": opus["si_sdr"]})

        def evaluate(step: int, full: bool) -> float:
            e0 = time.perf_counter()
            report = evaluate_learning(generator, eval_audio, eval_semantic, N_QS if full else (), mel,
                                       reference_mels)
            (history if full else usage_history).append((step, report))
            mlflow.log_metrics(report.as_metrics(), step=step)
            print_eval(step, time.perf_counter() - start, report)
            return time.perf_counter() - e0

        start = time.perf_counter()
        budget = args.minutes * 60
        usage_cost = evaluate(0, full=False)
        full_cost = 6 * usage_cost  # estimate (4 decodes + mel per excerpt) until a full evaluation was timed
        step, eval_time = 0, usage_cost
        while step < args.steps:
            losses = step_fn(sampler.batch(args.batch))
            step += 1
            if step % 10 == 0:
                mlflow.log_metrics({f"train_{k}": v for k, v in losses.items()}, step=step)
            if not all(math.isfinite(v) for v in losses.values()):
                print(f"non-finite loss at step {step}: {losses}")
                break
            if step % args.full_eval_every == 0:
                full_cost = evaluate(step, full=True)
                eval_time += full_cost
            elif step % args.eval_every == 0:
                eval_time += evaluate(step, full=False)
            per_step = (time.perf_counter() - start - eval_time) / step
            # Stop early enough that the final full evaluation still fits in the budget.
            if time.perf_counter() - start + per_step + full_cost > budget:
                break
        if not history or history[-1][0] != step:
            evaluate(step, full=True)
        wall = time.perf_counter() - start

        rows = check_targets(history, usage_history, Targets())
        stretch = stretch_rows(history[-1][1], opus)
        met = all(ok for *_, ok in rows)
        mlflow.log_metrics({"targets_met": float(sum(ok for *_, ok in rows)), "steps": float(step),
                            "wall_minutes": wall / 60})
        mlflow.set_tag("learning_verdict", "all targets met" if met else "targets missed")
        path = plot(history, usage_history, opus, args.out / "learning.png")
        if path is not None:
            mlflow.log_artifact(str(path))
        results = {"steps": step, "wall_minutes": wall / 60, "mlflow_uri": uri, "run_id": run.info.run_id,
                   "targets": [dict(zip(("target", "wanted", "measured", "met"), r, strict=True)) for r in rows],
                   "stretch": [dict(zip(("measure", "wanted", "measured"), r, strict=True)) for r in stretch],
                   "final": history[-1][1].as_metrics(), "opus": opus}
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        mlflow.log_artifact(str(args.out / "results.json"))

    r = history[-1][1]
    print(f"\n{cfg.name} ({args.preset}{' ' + ' '.join(args.override) if args.override else ''}): {step} steps in "
          f"{wall / 60:.1f} min, batch {args.batch} x {crop / sr:.2f} s, {len(eval_names)} held-out tracks x "
          f"{eval_len / sr:g} s")
    print(f"codes used per layer: {' '.join(map(str, r.codes_used))} of {cfg.model.codebook_size}; perplexity "
          f"{' '.join(f'{x:.1f}' for x in r.perplexity)}")
    print("n_q | mel    | SI-SDR   | identification")
    for n in r.mel:
        print(f"{n:3d} | {r.mel[n]:.3f}  | {r.si_sdr[n]:+6.1f} dB | {r.identification[n]:.0%}")
    print(f"constant codes | {r.constant_mel:.3f}")
    width = max(len(t[0]) for t in rows + stretch)
    print(f"\n{'target':{width}} | {'wanted':22} | {'measured':40} | met")
    for name, wanted, measured, ok in rows:
        print(f"{name:{width}} | {wanted:22} | {measured:40} | {'yes' if ok else 'NO'}")
    for name, wanted, measured in stretch:
        print(f"{name:{width}} | {wanted:22} | {measured:40} |")
    print(f"\nMLflow: {uri} run {run.info.run_id}; plot: {path}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
