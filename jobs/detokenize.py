"""Decode a token shard back to audio for spot checks.

    python -m jobs.detokenize demo/tokens/corpus-000000.tar demo/decoded --limit 3
    python -m jobs.detokenize s3://corpus/tokens/train-000007.tar /tmp/check --keys song_a,song_b --n-q 4

Writes ``OUT_DIR/KEY.wav`` (mono, source sample rate unless --sample-rate, trimmed to the source duration),
decoded with the model recorded in each track's json unless --model is given.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.detokenize", description=__doc__.split("\n")[0])
    parser.add_argument("shard", help="token shard written by jobs.tokenize (local or s3://)")
    parser.add_argument("output_dir", help="folder for KEY.wav files")
    parser.add_argument("--model", help="codec to decode with (default: the model recorded per track)")
    parser.add_argument("--keys", help="comma-separated track keys (default: all)")
    parser.add_argument("--limit", type=int, help="at most this many tracks")
    parser.add_argument("--n-q", type=int, help="decode with the first N codebooks")
    parser.add_argument("--sample-rate", type=int, help="output rate (default: the source rate)")
    parser.add_argument("--tracking-uri", help="the tracking store of models:/ references (tracking.uri of the "
                                               "jobs; default: $MLFLOW_TRACKING_URI or sqlite:///mlflow.db)")
    args = parser.parse_args(argv)

    from pipelines.tokenize.decode import decode_shard

    written = decode_shard(args.shard, args.output_dir, model=args.model,
                           keys=args.keys.split(",") if args.keys else None, limit=args.limit, n_q=args.n_q,
                           sample_rate=args.sample_rate, mlflow_uri=args.tracking_uri)
    for path in written:
        print(f"wrote {path}")
    print(f"decoded {len(written)} track(s) from {args.shard}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
