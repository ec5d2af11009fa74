"""One process of a multi-node RL job (``torchrun -m lad.pipeline.worker``): read the trainer's
config from the staging prefix, train, and on rank 0 publish the model and its metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    from lad.storage import put_bytes, put_dir, read_bytes
    from lad.train.engine import dist_info
    from lad.train.rl import RLConfig, train_rl

    parser = argparse.ArgumentParser(prog="lad.pipeline.worker", description=__doc__)
    parser.add_argument("--config", required=True, help="URI of the RLConfig JSON")
    parser.add_argument("--publish", required=True, help="URI prefix where rank 0 publishes model/ and metrics.json")
    args = parser.parse_args(argv)
    cfg = RLConfig.model_validate_json(read_bytes(args.config))
    results = train_rl(cfg)
    if dist_info()[0] == 0:
        put_dir(Path(cfg.output_dir) / "model", f"{args.publish}/model")
        put_bytes(json.dumps(results, default=str).encode(), f"{args.publish}/metrics.json")


if __name__ == "__main__":
    main()
