"""Peak memory of the pipeline's register step (``lad.pipeline.steps.register``): logging the
checkpoint folder as it is (what the step does) against loading the model and logging it from
memory (what it did before), on SmolLM2-135M-Instruct and on the ~1M-parameter tiny model, so that
what grows with the model shows (goal: under 2 GiB for any model size).

    python benchmarks/bench_register_memory.py [--json out.json]

Method: the model is written once as a Hugging Face folder (float32 safetensors, as the training
step writes it), by a child process. Each measurement runs in a fresh child process (this script
with ``--child``): it imports the step, registers the folder in a fresh sqlite MLflow store (log
the model, register the version, the promotion gate) and reports its peak resident set size, and
the same after only the imports (the floor every variant pays: torch, transformers, MLflow). The
step's own memory is peak - floor. The peak is ``VmHWM`` of /proc/self/status, the high-water
mark of this process image: ``ru_maxrss`` would carry over the parent's peak across the exec. It
also reports the size of the logged model (the checkpoint's files, lad's Python sources, MLflow's
metadata) against the checkpoint's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct", "tiny:1m": "tiny (1M parameters)"}
GIB = 2**30


def peak_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024  # kB


def summary() -> dict:
    """An evaluation summary of one benchmark: what the register step tags the version with."""
    from lad.evaluation.summary import aggregate, benchmark_summary

    problems = {0: [{"correct": True, "answer": "1", "response": "1", "tokens": 1, "finish_reason": "stop", "reason": "correct"}]}
    bench = benchmark_summary("synthetic_countdown", "math", 1, problems, {0: {"1": 0}}, dist_n=[1], resamples=10)
    return {"label": "x", "model": "m", "benchmarks": {"synthetic_countdown": bench}, "aggregate": aggregate({"synthetic_countdown": bench})}


def child(variant: str, model_dir: str, store: str) -> dict:
    import os

    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{store}/mlflow.db"
    os.chdir(store)  # the experiment's default artifact root is relative to the working directory
    import mlflow.pyfunc  # noqa: F401  (the floor: what every variant imports)
    import transformers  # noqa: F401

    from lad.pipeline import steps

    floor = peak_bytes()
    if variant == "folder":
        steps.register(model_dir, summary(), name="bench", min_score=0.0)
    else:  # the former step: the whole model loaded in float32, then logged from memory
        from lad.modeling import load_model
        from lad.tracking import Tracker, TrackingConfig

        model, tokenizer = load_model(model_dir)
        tracker = Tracker(TrackingConfig())
        with tracker.run("register-bench") as run:
            run.log_model(model, tokenizer)
    peak = peak_bytes()
    (logged,) = {p.parent for p in Path(store).rglob("MLmodel")}
    return {"peak": peak, "floor": floor, "logged_bytes": sum(p.stat().st_size for p in logged.rglob("*") if p.is_file())}


def save(ref: str, model_dir: str) -> dict:
    from lad.modeling import load_model, save_model

    save_model(*load_model(ref), Path(model_dir), {"base_model": ref})
    return {"checkpoint_bytes": sum(p.stat().st_size for p in Path(model_dir).iterdir())}


def run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(variant: str, model_dir: Path) -> dict:
    with tempfile.TemporaryDirectory() as store:
        return run_child(variant, "--model-dir", str(model_dir), "--store", store)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", choices=["save", "folder", "memory"])
    parser.add_argument("--ref", help="with --child save: the model reference")
    parser.add_argument("--model-dir")
    parser.add_argument("--store")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.child == "save":
        print(json.dumps(save(args.ref, args.model_dir)))
        return
    if args.child:
        print(json.dumps(child(args.child, args.model_dir, args.store)))
        return

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for ref, label in MODELS.items():
            folder = Path(tmp) / ref.replace(":", "-")
            size = run_child("save", "--ref", ref, "--model-dir", str(folder))["checkpoint_bytes"]
            rows = {variant: measure(variant, folder) for variant in ("folder", "memory")}
            results[label] = {"checkpoint_bytes": size, **rows}
            print(f"{label}: checkpoint {size / 2**20:.0f} MiB")
            for variant, r in rows.items():
                print(f"  {variant:6s} peak {r['peak'] / GIB:.2f} GiB (after imports {r['floor'] / GIB:.2f} GiB, "
                      f"the step's own {(r['peak'] - r['floor']) / 2**20:.0f} MiB); logged model {r['logged_bytes'] / 2**20:.1f} MiB "
                      f"({(r['logged_bytes'] - size) / 2**20:+.2f} MiB over the checkpoint)")
    small, large = results[MODELS["tiny:1m"]], results[MODELS["smollm2-135m-instruct"]]
    for variant in ("folder", "memory"):
        growth = (large[variant]["peak"] - large[variant]["floor"]) - (small[variant]["peak"] - small[variant]["floor"])
        print(f"{variant}: the step's own memory grows by {growth / 2**20:.0f} MiB from the tiny model to SmolLM2 "
              f"({(large['checkpoint_bytes'] - small['checkpoint_bytes']) / 2**20:.0f} MiB more checkpoint)")
    print(f"SmolLM2: folder peak / memory peak = {large['folder']['peak'] / large['memory']['peak']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
