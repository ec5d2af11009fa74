"""Full HumanEval+ verification (164 canonical solutions, every base and plus input) through the
sandbox service versus EvalPlus's own evaluator, on the same machine in the same run.

EvalPlus lives in its own virtual environment (it downgrades packages lad needs):

    python3 -m venv /tmp/evalplus-venv && /tmp/evalplus-venv/bin/pip install evalplus==0.3.1
    .venv/bin/python benchmarks/bench_sandbox_humanevalplus.py --evalplus-python /tmp/evalplus-venv/bin/python

Both sides get 2 parallel workers. "cold" includes computing the expected outputs from the
canonical solutions (EvalPlus: its ground-truth cache is emptied first; lad: a recording pass in
the sandbox); "warm" reuses them. EvalPlus runs the programs without isolation; lad runs every
program under bubblewrap.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lad.local_server import free_port, wait_until_healthy
from lad.sandbox.client import SandboxClient

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "humanevalplus.jsonl"
GROUP = 8  # tasks per round trip: some outputs are 12 MB each


def _inputs(task: dict) -> list:
    return task["base_input"] + task["plus_input"]


def lad_verify(client: SandboxClient, tasks: list[dict], expected: dict | None) -> tuple[int, dict]:
    """(tasks passing all inputs, expected outputs). With expected=None they are recorded first."""
    solved, recorded = 0, {}
    for start in range(0, len(tasks), GROUP):
        group = tasks[start:start + GROUP]
        programs = [t["prompt"] + t["canonical_solution"] for t in group]
        if expected is None:
            runs = client.evaluate_many(
                [(code, [{"type": "call", "entry_point": t["entry_point"], "args": a} for a in _inputs(t)])
                 for code, t in zip(programs, group)], timeout_s=20)
            outs = {t["task_id"]: [v.output for v in r.verdicts] for t, r in zip(group, runs)}
        else:
            outs = {t["task_id"]: expected[t["task_id"]] for t in group}
        recorded.update(outs)
        # the client splits the programs whose expected outputs make an oversized request
        results = client.evaluate_many(
            [(code, [{"type": "call", "entry_point": t["entry_point"], "args": a, "expected": e, "atol": t["atol"]}
                     for a, e in zip(_inputs(t), outs[t["task_id"]])]) for code, t in zip(programs, group)],
            timeout_s=20)
        solved += sum(r.passed == r.total for r in results)
    return solved, recorded


def evalplus_run(python: str, samples: Path, cache: Path) -> tuple[float, str]:
    env = dict(os.environ, HUMANEVAL_OVERRIDE_PATH=str(DATA), XDG_CACHE_HOME=str(cache))
    start = time.perf_counter()
    done = subprocess.run([python, "-m", "evalplus.evaluate", "--dataset", "humaneval", "--samples", str(samples),
                           "--parallel", "2", "--i-just-wanna-run"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"evalplus failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout + done.stderr


def _evalplus_score(output: str) -> str:
    found = re.findall(r"humaneval\+ \(base \+ extra tests\)\s*\n\s*pass@1:\s*([0-9.]+)", output)
    return found[-1] if found else "?"



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evalplus-python", default="/tmp/evalplus-venv/bin/python",
                    help="interpreter of a virtual environment with evalplus==0.3.1")
    ap.add_argument("--workers", type=int, default=2, help="service workers (EvalPlus gets --parallel 2)")
    args = ap.parse_args()
    console = Console()
    if not Path(args.evalplus_python).exists():
        sys.exit(f"no interpreter at {args.evalplus_python}; see this script's docstring to install evalplus")
    tasks = [json.loads(line) for line in DATA.open()]

    work = Path(tempfile.mkdtemp(prefix="bench-heplus-"))
    samples = work / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t["task_id"], "solution": t["prompt"] + t["canonical_solution"]})
                               + "\n" for t in tasks))
    rows = []
    cache = work / "cache"
    cold, out = evalplus_run(args.evalplus_python, samples, cache)
    rows.append(("EvalPlus 0.3.1, cold (computes ground truth)", cold, _evalplus_score(out)))
    for f in work.glob("*eval_results.json"):
        f.unlink()
    warm, out = evalplus_run(args.evalplus_python, samples, cache)
    rows.append(("EvalPlus 0.3.1, warm (cached ground truth)", warm, _evalplus_score(out)))

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lad.sandbox", "serve", "--port", str(port), "--workers",
                             str(args.workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        problem = wait_until_healthy(proc, url + "/healthz", 60)
        if problem is not None:
            sys.exit(f"the sandbox service did not start: {problem}")
        with SandboxClient(url, concurrency=args.workers) as client:
            start = time.perf_counter()
            solved, expected = lad_verify(client, tasks, None)
            rows.append(("lad sandbox, cold (records expected outputs)", time.perf_counter() - start,
                         f"{solved}/164"))
            start = time.perf_counter()
            solved, _ = lad_verify(client, tasks, expected)
            rows.append(("lad sandbox, warm (expected outputs known)", time.perf_counter() - start, f"{solved}/164"))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"HumanEval+ canonical solutions, all {sum(len(_inputs(t)) for t in tasks)} inputs, "
                        f"2 workers each, {os.cpu_count()} CPUs")
    for col in ("evaluator", "seconds", "score"):
        table.add_column(col, justify="left" if col == "evaluator" else "right")
    for name, secs, score in rows:
        table.add_row(name, f"{secs:.1f}", score)
    console.print(table)
    console.print(f"ratio EvalPlus / lad: cold {rows[0][1] / rows[2][1]:.2f}x, warm {rows[1][1] / rows[3][1]:.2f}x "
                  "(above 1: lad is faster)")


if __name__ == "__main__":
    main()
