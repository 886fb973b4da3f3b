"""Training job: GAN-train the codec on Ray Train, track it in MLflow, register the final model.

Local:   python -m jobs.train                                   (embedded CPU smoke defaults)
         python -m jobs.train --config configs/train/tiny_cpu.yaml schedule.max_steps=20
Cluster: ray job submit --working-dir . -- python -m jobs.train --config configs/train/muq_xcodec_8gpu.yaml
Resume:  submit again with the same run.name and run.storage_path.
"""

from __future__ import annotations

import sys

from jobs._cli import BAD_CONFIG, config_parser, load_or_report


def main(argv: list[str] | None = None) -> int:
    """Parse ``[--config PATH] key=value ...``, validate the config, train, print the result."""
    from pipelines.train.config import load_train_config
    from pipelines.train.driver import run_training

    args = config_parser("python -m jobs.train", __doc__, "scaling.num_workers=4").parse_args(argv)
    cfg = load_or_report(load_train_config, args.config, args.overrides)
    if cfg is None:
        return BAD_CONFIG
    result = run_training(cfg)
    print(f"run {result.run_id} finished at step {result.metrics.get('step')}; "
          f"checkpoint {result.checkpoint_path}; model {result.model_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
