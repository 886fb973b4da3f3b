"""Corpus preparation job: music files -> WebDataset shards + manifest.json + rejected.jsonl.

Local:   python -m jobs.prepare --config configs/prepare/default.yaml inputs=[/data/music] output=/data/shards
Cluster: ray job submit --working-dir . -- python -m jobs.prepare --config configs/prepare/default.yaml ...
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.data_config import DataConfigError, load_prepare_config
from pipelines.prepare import run_prepare


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config PATH key=value ...``, run the preparation, print the summary. Returns the exit code
    (2: bad config, reported before any Ray work)."""
    parser = argparse.ArgumentParser(prog="python -m jobs.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file (configs/prepare/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="omegaconf dotlist overrides, e.g. output=s3://b/p")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_prepare_config(args.config, args.overrides)
    except (DataConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    manifest = run_prepare(cfg)
    print(f"{manifest['num_samples']} samples, {manifest['num_shards']} shards, "
          f"{manifest['total_duration']:.1f} s, {manifest['num_rejected']} rejected -> {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
