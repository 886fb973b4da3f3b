"""CPU cost of ``Codec.encode``/``decode`` at full geometry next to a 24 kHz DAC and next to the encode lower bound.

All random weights, one process, the same torch threads for every row. Each measure is the best of
``--repeats`` calls after a warm-up (the rows take turns, one call each per round), as wall seconds and as
process CPU-seconds (all threads), because the machine is shared and wall time swings.

Rows, per track length (``--seconds``, several allowed):
- ``Codec.encode``: the inference API as shipped (``inference.teacher_window: trimmed``: MuQ on each 10 s chunk
  plus 2 s of context either side clipped to the track, the acoustic encoder once per span with its receptive
  field of context); with ``--compile`` also the same with ``inference.compile=true`` (the one-off compile time
  is printed apart).
- ``previous encode``: ``teacher_window: padded`` (the previous default, kept for checkpoints written before
  the key): MuQ on full 14 s windows, zeros outside the track.
- ``every window``: the padded grid computed literally (teacher and acoustic encoder on every window; the encode
  path before the span encoder, still reference mode's path). Same codes as ``previous encode``.
- ``lower bound``: the MuQ teacher once over the track + the acoustic encoder and RVQ once over it (no chunking,
  no context: what any chunked encode must at least pay).
- ``DAC``: transformers ``DacModel`` 24 kHz encode / decode (hop 320, 32 codebooks).

Run:
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/codec_rtf.py --seconds 10 3 --threads 1 --compile
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from report import emit  # benchmarks/report.py (this script's folder is on sys.path)

from codec.nn.layers import fold_weight_norm

SAMPLE_RATE = 24000


def measure(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(best wall seconds, best process CPU-seconds) of each function over ``repeats`` rounds after one warm-up
    call each. A round calls every function once, in turn, so a change of the machine's load during the run
    reaches every row alike instead of the rows timed at that moment."""
    for fn in fns.values():
        fn()
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall, cpu = time.perf_counter() - w, time.process_time() - c
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    return best


def build_codec(compile: bool = False):
    """``Codec`` with the shipped ``muq_xcodec`` geometry and a MuQ-large-geometry teacher (random init)."""
    from codec.builders import build_generator
    from codec.config import load_codec_config
    from codec.inference import Codec
    from codec.model.teacher import MuQTeacher

    cfg = load_codec_config("muq_xcodec", [f"inference.compile={str(compile).lower()}"])
    teacher = MuQTeacher.random(dim=1024, depth=12, heads=16, conv_dim=512, intermediate_size=4096, seed=0)
    return Codec(build_generator(cfg), cfg, teacher=teacher)


def with_padded_teacher_window(codec):
    """The same weights with ``inference.teacher_window: padded`` (the previous default)."""
    from codec.config import load_codec_config
    from codec.inference import Codec

    cfg = load_codec_config(codec.config, {"inference": {"teacher_window": "padded"}})
    return Codec(codec.generator, cfg, teacher=codec.teacher)


def build_dac():
    """transformers.DacModel with the 24 kHz DAC geometry (hop 320, 32 codebooks), random init."""
    from transformers import DacConfig, DacModel

    config = DacConfig(sampling_rate=SAMPLE_RATE, downsampling_ratios=[2, 4, 5, 8], n_codebooks=32,
                       hop_length=320)
    return fold_weight_norm(DacModel(config)).eval()


def measure_track(codec, previous, compiled, dac, seconds: float, repeats: int) -> dict[str, tuple[float, float]]:
    """(wall s, CPU-s) of every row for one random track of ``seconds``."""
    n = round(seconds * SAMPLE_RATE)
    audio = 0.1 * torch.randn(n)
    fns: dict[str, Callable[[], object]] = {}
    with torch.inference_mode():
        frames = codec.num_frames(n)
        padded = torch.nn.functional.pad(audio, (0, frames * codec.hop_length - n))[None, None]
        out = torch.empty(1, codec.n_codebooks, frames, dtype=torch.int16)
        codec.encode_windows([audio], [frames], 8, out)
        assert torch.equal(previous.encode(audio, SAMPLE_RATE), out), "the span encoder changed the codes"
        fns["Codec.encode"] = lambda: codec.encode(audio, SAMPLE_RATE)
        fns["previous encode (padded)"] = lambda: previous.encode(audio, SAMPLE_RATE)
        fns["every window (padded)"] = lambda: codec.encode_windows([audio], [frames], 8, out)
        fns["lower bound: teacher + encoder once"] = lambda: codec.generator.encode(padded, codec.teacher(padded))
        if compiled is not None:
            start = time.process_time()
            codes = compiled.encode(audio, SAMPLE_RATE)
            first = time.process_time() - start
            eager = codec.encode(audio, SAMPLE_RATE)  # (``out`` holds the every-window codes: not the same grid)
            print(f"{seconds:g} s: first compiled encode (compile + run) {first:.1f} CPU-s, "
                  f"codes equal to eager: {(codes == eager).float().mean().item():.4%}")
            fns["Codec.encode, inference.compile"] = lambda: compiled.encode(audio, SAMPLE_RATE)
        codes = out.long()
        fns["Codec.decode (8 layers)"] = lambda: codec.decode(codes)
        if dac is not None:
            x = audio[None, None]
            dac_codes = dac.encode(x).audio_codes
            fns["DAC encode"] = lambda: dac.encode(x)
            fns["DAC decode"] = lambda: dac.decode(audio_codes=dac_codes)
        return measure(fns, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0], help="track lengths to encode")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--compile", action="store_true", help="also measure inference.compile=true")
    parser.add_argument("--no-dac", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    codec = build_codec()
    previous = with_padded_teacher_window(codec)
    compiled = build_codec(compile=True) if args.compile else None
    if compiled is not None:
        compiled.load_state_dict(codec.state_dict())
    dac = None if args.no_dac else build_dac()
    params = {name: sum(p.numel() for p in m.parameters()) / 1e6
              for name, m in (("XCodec", codec.generator), ("MuQ teacher", codec.teacher), ("DAC", dac)) if m}
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, params (M): "
          + ", ".join(f"{k} {v:.1f}" for k, v in params.items()))

    for seconds in args.seconds:
        rows = measure_track(codec, previous, compiled, dac, seconds, args.repeats)
        print(f"\n{seconds:g} s of audio\n{'':<40}{'wall s':>9}{'CPU-s':>9}{'RTF (CPU)':>11}")
        for name, (wall, cpu) in rows.items():
            print(f"{name:<40}{wall:>9.2f}{cpu:>9.2f}{cpu / seconds:>11.3f}")
        ours_wall, ours_cpu = rows["Codec.encode"]
        bound_wall, bound_cpu = rows["lower bound: teacher + encoder once"]
        print(f"Codec.encode / lower bound: {ours_wall / bound_wall:.2f}x wall, {ours_cpu / bound_cpu:.2f}x CPU-s; "
              f"previous encode (padded) / Codec.encode: {rows['previous encode (padded)'][1] / ours_cpu:.2f}x, "
              f"every window / Codec.encode: {rows['every window (padded)'][1] / ours_cpu:.2f}x CPU-s")
        tag = f"{seconds:g} s track"
        emit(f"encode CPU-s, {tag}", "CPU-s", ours_cpu, "MuQ once + encoder once (lower bound)", bound_cpu, False)
        emit(f"encode CPU-s, {tag}", "CPU-s", ours_cpu, "previous encode (teacher_window: padded)",
             rows["previous encode (padded)"][1], False)
        emit(f"encode CPU-s, {tag}", "CPU-s", ours_cpu, "every window (encode before the span encoder)",
             rows["every window (padded)"][1], False)
        if compiled is not None:
            emit(f"encode CPU-s with inference.compile, {tag}", "CPU-s", rows["Codec.encode, inference.compile"][1],
                 "MuQ once + encoder once (lower bound)", bound_cpu, False)
        if dac is not None:
            emit(f"encode RTF (MuQ + encoder + RVQ), {tag}", "CPU-s per audio s", ours_cpu / seconds,
                 "DAC 24 kHz (transformers)", rows["DAC encode"][1] / seconds, False)
            emit(f"decode RTF (8 layers), {tag}", "CPU-s per audio s", rows["Codec.decode (8 layers)"][1] / seconds,
                 "DAC 24 kHz (transformers)", rows["DAC decode"][1] / seconds, False)


if __name__ == "__main__":
    main()
