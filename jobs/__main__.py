"""The ``muq-xcodec`` console script: every codec command and every Ray job behind one name.

    muq-xcodec encode song.wav song.npz          # codec commands (python -m codec ...)
    muq-xcodec tokenize --config configs/tokenize/smoke.yaml input=... output=...   # python -m jobs.tokenize

A job is ``python -m jobs.JOB ARGS...``; its own parser gives its ``--help``. The codec commands are
``codec.__main__``'s (the codec never imports jobs or pipelines: this module sits above both).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from codec import __main__ as codec_cli

# Job name -> (module, one-line summary).
JOBS: dict[str, tuple[str, str]] = {
    "prepare": ("jobs.prepare", "music files -> WebDataset shards (+ manifest.json, rejected.jsonl)"),
    "train": ("jobs.train", "train the codec on Ray Train, tracked and registered in MLflow"),
    "tokenize": ("jobs.tokenize", "tokenize WebDataset shards of whole tracks into token shards"),
    "detokenize": ("jobs.detokenize", "decode a token shard back to audio for spot checks"),
    "evaluate": ("jobs.evaluate", "reconstruction quality per bitrate, eval.json and an MLflow run"),
    "demo": ("jobs.demo", "end-to-end demo on the embedded default (local Ray, MLflow, files)"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The codec's parser, named ``muq-xcodec``, with the jobs listed after its commands."""
    parser = codec_cli.build_parser(selected=selected)
    parser.prog = "muq-xcodec"
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max(map(len, JOBS))
    parser.epilog = "Ray jobs (muq-xcodec JOB --help):\n" + "\n".join(
        f"  {name:<{width}}  {summary} (python -m {module})" for name, (module, summary) in JOBS.items())
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a job (``muq-xcodec JOB ARGS...``) or a codec command. Returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected in JOBS:
        job = importlib.import_module(JOBS[selected][0])
        return int(job.main(argv[argv.index(selected) + 1:]) or 0)
    return codec_cli.main(argv, parser=build_parser(selected))


if __name__ == "__main__":
    sys.exit(main())
