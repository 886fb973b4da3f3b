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

import sys

from jobs._cli import BAD_CONFIG, config_parser, load_or_report, report


def main(argv: list[str] | None = None) -> int:
    """Parse ``--config PATH [--overwrite] key=value ...``, tokenize, print the summary. Returns the exit code."""
    from mlflow.exceptions import MlflowException

    from pipelines.common.config import ConfigError
    from pipelines.tokenize.config import load_tokenize_config
    from pipelines.tokenize.driver import OutputMismatchError, run_tokenize

    parser = config_parser("python -m jobs.tokenize", __doc__, "model=models:/NAME@ALIAS")
    parser.add_argument("--overwrite", action="store_true", help="redo shards that are already done")
    args = parser.parse_args(argv)
    cfg = load_or_report(load_tokenize_config, args.config, [*args.overrides, *(["overwrite=true"] * args.overwrite)])
    if cfg is None:
        return BAD_CONFIG
    try:
        result = run_tokenize(cfg)
    except (ConfigError, OutputMismatchError, FileNotFoundError, LookupError, MlflowException) as e:
        return report(e)  # no input shards, output from another model, unknown model/alias
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
