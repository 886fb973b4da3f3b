"""Evaluate a codec on WebDataset shards: reconstruct every track at n_q = 1, 2, 4, 8 (and through Opus),
measure mel / STFT distance, SI-SDR and ViSQOL, codebook usage; write eval.json and log an MLflow run.

    ray job submit --working-dir . -- python -m jobs.evaluate --config configs/evaluate/default.yaml \
        model=models:/muq-xcodec@prod shards=s3://corpus/eval-shards/ output=s3://corpus/eval/prod

Locally (embedded Ray, MLflow ``sqlite:///mlflow.db``)::

    python -m jobs.evaluate --config configs/evaluate/smoke.yaml model=tiny shards=outputs/smoke_shards

Overrides are omegaconf dotlist entries (``key=value``). Exit status: 0 done, 1 a shard failed or no track
could be evaluated (bad tracks alone are skipped and reported), 2 bad config.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.evaluate_config import EvaluateConfigError, load_evaluate_config


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config PATH key=value ...``, run the evaluation, print the table. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/evaluate/*.yaml)")
    parser.add_argument("overrides", nargs="*", help="omegaconf dotlist overrides, e.g. model=models:/NAME@ALIAS")
    args = parser.parse_args(argv)
    try:
        cfg = load_evaluate_config(args.config, args.overrides)
    except (EvaluateConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from pipelines.evaluate import run_evaluate

    try:
        result = run_evaluate(cfg)
    except EvaluateConfigError as e:  # found while planning (model geometry, ViSQOL required), before Ray
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
