"""Tokenize WebDataset shards of whole tracks into RVQ code shards on Ray.

    ray job submit --working-dir . -- python -m jobs.tokenize --config configs/tokenize/default.yaml \
        model=models:/muq-xcodec@prod input=s3://corpus/shards/ output=s3://corpus/tokens/ compute.actors=4

Locally (embedded Ray, MLflow ``sqlite:///mlflow.db``)::

    python -m jobs.tokenize --config configs/tokenize/smoke.yaml input=demo/shards output=demo/tokens

Overrides are omegaconf dotlist entries (``key=value``); ``--overwrite`` = ``overwrite=true``.
Exit status: 0 done (or nothing to do), 1 some shards failed (rerun to retry), 2 bad config, unknown
model, no input shards or an output made with another model/config.
"""

from __future__ import annotations

import argparse
import sys

from pipelines.tokenize_config import TokenizeConfigError, load_tokenize_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.tokenize", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="YAML config (configs/tokenize/*.yaml)")
    parser.add_argument("--overwrite", action="store_true", help="redo shards that are already done")
    parser.add_argument("overrides", nargs="*", help="omegaconf dotlist overrides, e.g. model=models:/NAME@ALIAS")
    args = parser.parse_args(argv)
    overrides = list(args.overrides) + (["overwrite=true"] if args.overwrite else [])
    try:
        cfg = load_tokenize_config(args.config, overrides)
    except (TokenizeConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from mlflow.exceptions import MlflowException

    from pipelines.tokenize_driver import OutputMismatchError, run_tokenize

    try:
        result = run_tokenize(cfg)
    except (TokenizeConfigError, OutputMismatchError, FileNotFoundError, LookupError, MlflowException) as e:
        print(f"error: {e}", file=sys.stderr)  # no input shards, output from another model, unknown model/alias
        return 2
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
