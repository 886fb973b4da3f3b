"""What every job entrypoint shares: ``--config PATH key=value ...`` parsing and config errors as exit code 2."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pipelines.common.config import ConfigError

T = TypeVar("T")
BAD_CONFIG = 2  # exit code of a bad config, reported before any Ray work


def config_parser(prog: str, doc: str, example: str, config_required: bool = False) -> argparse.ArgumentParser:
    """An argument parser for ``[--config PATH] key=value ...`` (the first line of ``doc`` is its description)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.strip().splitlines()[0])
    parser.add_argument("--config", required=config_required, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help=f"omegaconf dotlist overrides, e.g. {example}")
    return parser


def load_or_report(load: Callable[[Any, Sequence[str]], T], path: Any, overrides: Sequence[str]) -> T | None:
    """``load(path, overrides)``, or None after printing ``error: <key>: <problem>`` on stderr."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return load(path, list(overrides))
    except (ConfigError, FileNotFoundError) as e:
        report(e)
        return None


def report(error: BaseException) -> int:
    """Print ``error: ...`` on stderr; returns the bad-config exit code."""
    print(f"error: {error}", file=sys.stderr)
    return BAD_CONFIG
