"""Corpus preparation job: music files -> WebDataset shards + manifest.json + rejected.jsonl.

Local:   python -m jobs.prepare --config configs/prepare/default.yaml inputs=[/data/music] output=/data/shards
Cluster: ray job submit --working-dir . -- python -m jobs.prepare --config configs/prepare/default.yaml ...
"""

from __future__ import annotations

import sys

from jobs._cli import BAD_CONFIG, config_parser, load_or_report


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config PATH key=value ...``, run the preparation, print the summary. Returns the exit code
    (2: bad config, reported before any Ray work)."""
    from pipelines.prepare.config import load_prepare_config
    from pipelines.prepare.driver import run_prepare

    args = config_parser("python -m jobs.prepare", __doc__, "output=s3://b/p", config_required=True).parse_args(argv)
    cfg = load_or_report(load_prepare_config, args.config, args.overrides)
    if cfg is None:
        return BAD_CONFIG
    manifest = run_prepare(cfg)
    print(f"{manifest['num_samples']} samples, {manifest['num_shards']} shards, "
          f"{manifest['total_duration']:.1f} s, {manifest['num_rejected']} rejected -> {cfg.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
