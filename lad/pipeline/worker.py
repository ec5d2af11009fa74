"""One training process of a pipeline step (``torchrun -m lad.pipeline.worker``): read the trainer's
config, train (resuming from the newest checkpoint published under ``checkpoint.remote``, where
one is set), and on rank 0 report progress and, with ``--publish``, publish the model and its
metrics. The training step starts it once per GPU of its pod (``steps.train(processes=N)``), and
the multi-node job once per GPU of each of its pods."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from lad.pipeline.console import progress
    from lad.storage import put_bytes, put_dir, read_bytes
    from lad.train.engine import dist_info
    from lad.train.rl import RLConfig, train_rl

    parser = argparse.ArgumentParser(prog="lad.pipeline.worker", description=__doc__)
    parser.add_argument("--config", required=True, help="URI (or path) of the RLConfig JSON")
    parser.add_argument("--publish", help="URI prefix where rank 0 publishes model/ and metrics.json; "
                        "without it they stay in the config's output_dir")
    args = parser.parse_args(argv)
    cfg = RLConfig.model_validate_json(read_bytes(args.config))
    first = dist_info()[0] == 0
    results = train_rl(cfg, resume=cfg.checkpoint.remote is not None,
                       on_step=lambda step: progress(step, cfg.train.max_steps) if first else None)
    if first and args.publish:
        put_dir(Path(cfg.output_dir) / "model", f"{args.publish}/model")
        put_bytes(json.dumps(results, default=str).encode(), f"{args.publish}/metrics.json")


if __name__ == "__main__":
    main()
