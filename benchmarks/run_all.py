"""Run every benchmark script and print one table: each measure, its baseline side by side, and the ratio.

    python benchmarks/run_all.py            # or: make benchmark
    python benchmarks/run_all.py --quick    # smaller inputs, for a smoke check

Each script runs in its own process (its own torch threads and Ray); their result lines are collected
with :func:`benchmarks.report.parse`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import parse  # noqa: E402

REAL_MUSIC = Path(os.environ.get("REAL_MUSIC", "~/.cache/real-music")).expanduser()  # ../shared/music/real_music.sh

# (script, full arguments, quick arguments); a script may appear more than once
SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    ("codec_rtf.py", ["--seconds", "10", "3", "--threads", "2", "--compile", "--repeats", "3"], ["--seconds", "4", "--threads", "2"]),
    ("data_throughput.py", ["--tracks", "50", "500"], ["--tracks", "8", "24", "--seconds", "10"]),
    ("train_throughput.py", ["--steps", "10", "--warmup", "2", "--workers", "1", "2"], ["--steps", "4", "--warmup", "1"]),
    ("tokenize_throughput.py", ["--tracks", "4", "--seconds", "30", "--per-shard", "2", "--rss-minutes", "1", "60"],
     ["--tracks", "3", "--seconds", "10", "--rss-minutes", "1", "5", "--rss-shard-tracks", "5"]),
]
if REAL_MUSIC.is_dir():  # steady state vs start-up on real music (>= 30 minutes in the full run)
    SCRIPTS.append(("tokenize_throughput.py",
                    ["--real-music", str(REAL_MUSIC), "--minutes", "30", "--rss-minutes"],
                    ["--real-music", str(REAL_MUSIC), "--minutes", "4", "--per-shard", "1", "--rss-minutes"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    parser.add_argument("--only", nargs="*", help="run only these scripts")
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    rows, failed = [], []
    for script, full, quick in SCRIPTS:
        if args.only and script not in args.only:
            continue
        print(f"== {script}", flush=True)
        start = time.monotonic()
        done = subprocess.run([sys.executable, str(HERE / script), *(quick if args.quick else full)],
                              env=env, capture_output=True, text=True)
        print(done.stdout[-3000:], done.stderr[-2000:] if done.returncode else "", sep="\n", flush=True)
        print(f"== {script}: exit {done.returncode} in {time.monotonic() - start:.0f} s", flush=True)
        found = parse(done.stdout)
        rows += [{**row, "script": script} for row in found]
        if done.returncode or not found:
            failed.append(script)
    print()
    print(format_table(rows))
    if failed:
        print(f"\nfailed or produced no result: {', '.join(failed)}")
    return 1 if failed else 0


def format_table(rows: list[dict]) -> str:
    """Markdown table of the result rows."""
    lines = ["| measure | ours | baseline | baseline value | ratio (ours/baseline) |", "|---|---|---|---|---|"]
    for r in rows:
        better = "higher is better" if r["higher_is_better"] else "lower is better"
        lines.append(f"| {r['measure']} ({r['unit']}, {better}) | {r['ours']:g} | {r['baseline']} | "
                     f"{r['baseline_value']:g} | {r['ratio'] if r['ratio'] is not None else '-'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
