"""Evaluate a codec on WebDataset shards: reconstruct every track at n_q = 1, 2, 4, 8 (and through Opus),
measure mel / STFT distance, SI-SDR and ViSQOL, codebook usage; write eval.json and log an MLflow run.

    ray job submit --working-dir . -- python -m jobs.evaluate --config configs/evaluate/default.yaml \
        model=models:/muq-xcodec@prod shards=s3://corpus/eval-shards/ output=s3://corpus/eval/prod

Locally (embedded Ray, MLflow ``sqlite:///mlflow.db``)::

    python -m jobs.evaluate --config configs/evaluate/smoke.yaml model=tiny shards=outputs/smoke_shards

Overrides are omegaconf dotlist entries (``key=value``). Exit status: 0 done, 1 a shard failed or no track
could be evaluated (bad tracks alone are skipped and reported), 2 bad config or model.
"""

from __future__ import annotations

import sys

from jobs._cli import BAD_CONFIG, config_parser, load_or_report, report


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config PATH key=value ...``, run the evaluation, print the table. Returns the exit code."""
    from pipelines.common.config import ConfigError
    from pipelines.evaluate.config import load_evaluate_config
    from pipelines.evaluate.driver import run_evaluate

    args = config_parser("python -m jobs.evaluate", __doc__, "model=models:/NAME@ALIAS").parse_args(argv)
    cfg = load_or_report(load_evaluate_config, args.config, args.overrides)
    if cfg is None:
        return BAD_CONFIG
    try:
        result = run_evaluate(cfg)
    except (ConfigError, FileNotFoundError) as e:  # found while planning (model, n_q, ViSQOL required), before Ray
        return report(e)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
