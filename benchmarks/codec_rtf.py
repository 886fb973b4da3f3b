"""CPU real-time factors of the full-size muq-xcodec next to a 24 kHz DAC (both random weights).

RTF = processing seconds / audio seconds (lower is faster; < 1 is faster than real time).
"encode" includes the MuQ teacher (MuQ-large geometry, randomly initialised) unless --no-teacher;
"encoder-only" is XCodec's encoder + RVQ given precomputed teacher features.

Run:
    PYTHONPATH=. HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/codec_rtf.py --seconds 10 --threads 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from report import emit  # benchmarks/report.py (this script's folder is on sys.path)

from codec.model.xcodec import XCodec
from codec.nn.layers import fold_weight_norm

SAMPLE_RATE = 24000


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def build_teacher():
    """MuQ-large geometry (1024-d, 12 conformer layers, 16 heads) from the real muq classes, random init."""
    from codec.model.teacher import MuQTeacher

    return MuQTeacher.random(dim=1024, depth=12, heads=16, conv_dim=512, intermediate_size=4096, seed=0)


def build_dac():
    """transformers.DacModel with the 24 kHz DAC geometry (hop 320, 32 codebooks), random init."""
    from transformers import DacConfig, DacModel

    config = DacConfig(sampling_rate=SAMPLE_RATE, downsampling_ratios=[2, 4, 5, 8], n_codebooks=32,
                       hop_length=320)
    return fold_weight_norm(DacModel(config)).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-teacher", action="store_true", help="skip the ~300M-parameter MuQ teacher")
    parser.add_argument("--no-dac", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = int(args.seconds * 25) * 960
    audio = 0.1 * torch.randn(1, 1, n)
    seconds = n / SAMPLE_RATE
    rows: list[tuple[str, float]] = []

    codec = fold_weight_norm(XCodec()).eval()
    n_params = sum(p.numel() for p in codec.parameters()) / 1e6
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, audio {seconds:.1f} s, "
          f"XCodec {n_params:.1f}M params (weight norm folded)")
    with torch.inference_mode():
        semantic = torch.randn(1, n // 960, codec.semantic_dim)
        if not args.no_teacher:
            teacher = build_teacher()
            t_params = sum(p.numel() for p in teacher.parameters()) / 1e6
            print(f"MuQ teacher (MuQ-large geometry, random init): {t_params:.1f}M params")
            t_teacher = timed(lambda: teacher(audio[:, 0]), args.repeats)
            semantic = teacher(audio[:, 0])
            rows.append(("muq teacher", t_teacher))
        t_enc = timed(lambda: codec.encode(audio, semantic), args.repeats)
        rows.append(("xcodec encoder-only (given features)", t_enc))
        if not args.no_teacher:
            rows.append(("xcodec encode (teacher + encoder)", t_teacher + t_enc))
        codes = codec.encode(audio, semantic)
        t_dec = timed(lambda: codec.decode(codes), args.repeats)
        rows.append(("xcodec decode (8 codebooks)", t_dec))

        if not args.no_dac:
            dac = build_dac()
            d_params = sum(p.numel() for p in dac.parameters()) / 1e6
            print(f"transformers.DacModel 24 kHz config (hop 320, 32 codebooks): {d_params:.1f}M params")
            t_dac_enc = timed(lambda: dac.encode(audio), args.repeats)
            dac_codes = dac.encode(audio).audio_codes
            t_dac_dec = timed(lambda: dac.decode(audio_codes=dac_codes), args.repeats)
            rows += [("dac encode", t_dac_enc), ("dac decode", t_dac_dec)]

    print(f"\n{'stage':<40}{'seconds':>10}{'RTF':>10}")
    for name, t in rows:
        print(f"{name:<40}{t:>10.2f}{t / seconds:>10.3f}")
    if not args.no_dac:
        enc = t_teacher + t_enc if not args.no_teacher else t_enc
        print(f"\nratio xcodec/dac: encode {enc / t_dac_enc:.2f}x, encoder-only {t_enc / t_dac_enc:.2f}x, "
              f"decode {t_dec / t_dac_dec:.2f}x")
        label = "encode RTF (MuQ + encoder + RVQ)" if not args.no_teacher else "encode RTF (encoder + RVQ, no MuQ)"
        emit(label, "s per audio s", enc / seconds, "DAC 24 kHz (transformers)", t_dac_enc / seconds, False)
        emit("decode RTF (8 layers)", "s per audio s", t_dec / seconds, "DAC 24 kHz (transformers)",
             t_dac_dec / seconds, False)


if __name__ == "__main__":
    main()
