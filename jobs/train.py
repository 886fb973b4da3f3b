"""Training job: GAN-train the codec on Ray Train, track it in MLflow, register the final model.

Local:   python -m jobs.train                                   (embedded CPU smoke defaults)
         python -m jobs.train --config configs/train/tiny_cpu.yaml schedule.max_steps=20
Cluster: ray job submit --working-dir . -- python -m jobs.train --config configs/train/muq_xcodec_8gpu.yaml
Resume:  submit again with the same run.name and run.storage_path.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pipelines.train_config import TrainConfigError, load_train_config


def main(argv: list[str] | None = None) -> int:
    """Parse ``[--config PATH] key=value ...``, validate the config, train, print the result."""
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML file (configs/train/*.yaml); default: embedded")
    parser.add_argument("overrides", nargs="*", help="omegaconf dotlist, e.g. scaling.num_workers=4")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_train_config(args.config, args.overrides)
    except TrainConfigError as e:  # before any Ray work
        print(f"invalid training config: {e}", file=sys.stderr)
        return 2

    from pipelines.trainer import run_training

    result = run_training(cfg)
    print(f"run {result.run_id} finished at step {result.metrics.get('step')}; "
          f"checkpoint {result.checkpoint_path}; model {result.model_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
