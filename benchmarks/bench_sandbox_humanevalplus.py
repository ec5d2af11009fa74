"""Full HumanEval+ verification (164 canonical solutions, every base and plus input) through the
sandbox service versus EvalPlus's own evaluator, on the same machine in the same run.

EvalPlus lives in its own virtual environment (it downgrades packages lad needs):

    python3 -m venv /tmp/evalplus-venv && /tmp/evalplus-venv/bin/pip install evalplus==0.3.1
    .venv/bin/python benchmarks/bench_sandbox_humanevalplus.py --evalplus-python /tmp/evalplus-venv/bin/python

Both sides get 2 parallel workers. "cold" includes computing the expected outputs from the
canonical solutions (EvalPlus: its ground-truth cache is emptied first; lad: each task's solution
is run in the sandbox to record them, then verified against them); "warm" reuses them. EvalPlus
runs the programs without isolation; lad runs every program under bubblewrap, through the HTTP
service. The rounds alternate between the two (``--rounds``, best of each reported), so both
meet the same load on a shared machine.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lad.local_server import free_port, wait_until_healthy
from lad.sandbox.client import SandboxClient

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks" / "humanevalplus.jsonl"


def _inputs(task: dict) -> list:
    return task["base_input"] + task["plus_input"]


def _program(task: dict) -> str:
    return task["prompt"] + task["canonical_solution"]


def _checks(task: dict, outputs: list) -> list[dict]:
    return [{"type": "call", "entry_point": task["entry_point"], "args": a, "expected": e, "atol": task["atol"]}
            for a, e in zip(_inputs(task), outputs)]


def lad_cold(client: SandboxClient, tasks: list[dict], in_flight: int) -> tuple[int, dict]:
    """(tasks passing all inputs, expected outputs): each task's expected outputs are recorded by
    running its canonical solution in the sandbox, then verified; ``in_flight`` tasks at a time,
    so only their outputs (some are 12 MB each) are held at once."""
    def one(task: dict) -> tuple[bool, list]:
        recorded = client.evaluate(_program(task), [{"type": "call", "entry_point": task["entry_point"], "args": a}
                                                    for a in _inputs(task)], timeout_s=20)
        outputs = [v.output for v in recorded.verdicts]
        result = client.evaluate(_program(task), _checks(task, outputs), timeout_s=20)
        return recorded.passed == result.passed == result.total, outputs

    with ThreadPoolExecutor(in_flight) as pool:
        done = list(pool.map(one, tasks))
    return sum(ok for ok, _ in done), {t["task_id"]: outputs for t, (_, outputs) in zip(tasks, done)}


def lad_warm(client: SandboxClient, tasks: list[dict], expected: dict) -> int:
    """Tasks passing all inputs, against known expected outputs (the client splits the programs
    whose expected outputs make an oversized request)."""
    results = client.evaluate_many([(_program(t), _checks(t, expected[t["task_id"]])) for t in tasks], timeout_s=20)
    return sum(r.passed == r.total for r in results)


def evalplus_run(python: str, samples: Path, cache: Path) -> tuple[float, str]:
    env = dict(os.environ, HUMANEVAL_OVERRIDE_PATH=str(DATA), XDG_CACHE_HOME=str(cache))
    start = time.perf_counter()
    done = subprocess.run([python, "-m", "evalplus.evaluate", "--dataset", "humaneval", "--samples", str(samples),
                           "--parallel", "2", "--i-just-wanna-run"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"evalplus failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed, done.stdout + done.stderr


def _evalplus_score(output: str, tasks: int) -> str:
    found = re.findall(r"humaneval\+ \(base \+ extra tests\)\s*\n\s*pass@1:\s*([0-9.]+)", output)
    return f"{round(float(found[-1]) * tasks)}/{tasks}" if found else "?"


def evalplus_round(python: str, tasks: list[dict], work: Path) -> list[tuple[str, float, str]]:
    """Cold (its ground-truth cache emptied first) and warm."""
    samples = work / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t["task_id"], "solution": _program(t)}) + "\n" for t in tasks))
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for name in ("cold (computes ground truth)", "warm (cached ground truth)"):
        for f in work.glob("*eval_results.json"):
            f.unlink()
        seconds, out = evalplus_run(python, samples, cache)
        rows.append((f"EvalPlus 0.3.1, {name}", seconds, _evalplus_score(out, len(tasks))))
    return rows


def lad_round(client: SandboxClient, tasks: list[dict], in_flight: int) -> list[tuple[str, float, str]]:
    start = time.perf_counter()
    solved, expected = lad_cold(client, tasks, in_flight)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    warm_solved = lad_warm(client, tasks, expected)
    warm = time.perf_counter() - start
    return [("lad sandbox, cold (records expected outputs)", cold, f"{solved}/{len(tasks)}"),
            ("lad sandbox, warm (expected outputs known)", warm, f"{warm_solved}/{len(tasks)}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evalplus-python", default="/tmp/evalplus-venv/bin/python",
                    help="interpreter of a virtual environment with evalplus==0.3.1")
    ap.add_argument("--workers", type=int, default=2, help="service workers (EvalPlus gets --parallel 2)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (the machine is shared)")
    args = ap.parse_args()
    console = Console()
    if not Path(args.evalplus_python).exists():
        sys.exit(f"no interpreter at {args.evalplus_python}; see this script's docstring to install evalplus")
    tasks = [json.loads(line) for line in DATA.open()]

    work = Path(tempfile.mkdtemp(prefix="bench-heplus-"))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lad.sandbox", "serve", "--port", str(port), "--workers",
                             str(args.workers)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    rounds: list[list[tuple[str, float, str]]] = []
    try:
        problem = wait_until_healthy(proc, url + "/healthz", 60)
        if problem is not None:
            sys.exit(f"the sandbox service did not start: {problem}")
        # twice as many requests in flight as workers: a worker never waits while the client encodes
        # the next request or decodes the last answer (at most `workers` programs run at once)
        with SandboxClient(url, concurrency=2 * args.workers) as client:
            for _ in range(args.rounds):  # alternating, so both sides meet the same load on a shared machine
                rounds.append(evalplus_round(args.evalplus_python, tasks, work)
                              + lad_round(client, tasks, 2 * args.workers))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"HumanEval+ canonical solutions, all {sum(len(_inputs(t)) for t in tasks)} inputs, "
                        f"2 workers each, {os.cpu_count()} CPUs")
    table.add_column("evaluator")
    table.add_column("seconds per round", justify="right")
    table.add_column("best", justify="right")
    table.add_column("tasks passed", justify="right")
    best = []
    for i, (name, _, _) in enumerate(rounds[0]):
        times = [r[i][1] for r in rounds]
        best.append(min(times))
        table.add_row(name, " ".join(f"{t:.1f}" for t in times), f"{min(times):.1f}", " ".join(r[i][2] for r in rounds))
    console.print(table)
    console.print(f"ratio EvalPlus / lad (best rounds): cold {best[0] / best[2]:.2f}x, warm {best[1] / best[3]:.2f}x "
                  "(above 1: lad is faster)")


if __name__ == "__main__":
    main()
