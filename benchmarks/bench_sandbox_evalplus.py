"""Full EvalPlus verification (HumanEval+ or MBPP+: every canonical solution on every base and
plus input) through the sandbox service versus EvalPlus's own evaluator, on the same machine in the
same run.

EvalPlus lives in its own virtual environment (it downgrades packages lad needs):

    python3 -m venv /tmp/evalplus-venv && /tmp/evalplus-venv/bin/pip install evalplus==0.3.1
    .venv/bin/python benchmarks/bench_sandbox_evalplus.py --benchmark humanevalplus --evalplus-python /tmp/evalplus-venv/bin/python
    .venv/bin/python benchmarks/bench_sandbox_evalplus.py --benchmark mbppplus --evalplus-python /tmp/evalplus-venv/bin/python

Both sides get 2 parallel workers and the same tests: lad's are the benchmark's adapter's (MBPP+
inputs rebuilt into tuples, sets and complex numbers as EvalPlus rebuilds them; EvalPlus's special
oracles), and EvalPlus reads the same file with the inputs lad leaves out removed (5 of MBPP+'s,
see lad.data.mbpp.OMITTED). "cold" includes computing the expected outputs from the canonical
solutions (EvalPlus: its ground-truth cache is emptied first; lad: each task's solution is run in
the sandbox to record them, then verified against them); "warm" reuses them. EvalPlus runs the
programs without isolation; lad runs every program under bubblewrap, through the HTTP service.
The rounds alternate between the two (``--rounds``, best of each reported), so both meet the same
load on a shared machine; CPU seconds (EvalPlus with its worker processes; lad's client, service
and sandboxes, counted through a cgroup of the service's own where one can be made) say what each
costs whatever the load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from rich.console import Console
from rich.table import Table

from lad.data import mbpp
from lad.data.adapters import ADAPTERS, FieldMap
from lad.data.public import read_text
from lad.data.schema import Problem
from lad.local_server import free_port, stop_process_group, wait_until_healthy
from lad.sandbox.client import SandboxClient


class Dataset(NamedTuple):
    file: str  # bundled with lad (lad.data.public), read by the adapter of the same name as the key
    evalplus: str  # EvalPlus's --dataset
    override: str  # the variable naming the file EvalPlus reads instead of downloading its release
    title: str


DATASETS = {
    "humanevalplus": Dataset("humanevalplus.jsonl", "humaneval", "HUMANEVAL_OVERRIDE_PATH", "HumanEval+"),
    "mbppplus": Dataset("mbppplus.jsonl", "mbpp", "MBPP_OVERRIDE_PATH", "MBPP+"),
}


def _evalplus_line(line: str) -> str:
    """A line of EvalPlus's file: the row as it is, or without the inputs lad leaves out (MBPP+:
    lad.data.mbpp.OMITTED), so that both sides run the same inputs."""
    row = json.loads(line)
    task = mbpp.task_number(row["task_id"]) if row["task_id"].startswith("Mbpp/") else None
    if task not in mbpp.OMITTED:
        return line
    base = len(row["base_input"])
    return json.dumps({**row, "base_input": [a for i, a in enumerate(row["base_input"]) if mbpp.kept(task, i)],
                       "plus_input": [a for i, a in enumerate(row["plus_input"]) if mbpp.kept(task, base + i)]})


def _recording(problem: Problem) -> list[dict]:
    return [{k: v for k, v in t.items() if k != "expected"} for t in problem.tests]


def _checks(problem: Problem, outputs: list) -> list[dict]:
    return [dict(t, expected=e) for t, e in zip(problem.tests, outputs)]


def lad_cold(client: SandboxClient, problems: list[Problem], in_flight: int) -> tuple[int, list]:
    """(tasks passing all inputs, expected outputs): each task's expected outputs are recorded by
    running its canonical solution in the sandbox, then verified; ``in_flight`` tasks at a time,
    so only their outputs (some are 12 MB each) are held at once."""
    def one(problem: Problem) -> tuple[bool, list]:
        recorded = client.evaluate(problem.reference_solution, _recording(problem), timeout_s=20)
        outputs = [v.output for v in recorded.verdicts]
        result = client.evaluate(problem.reference_solution, _checks(problem, outputs), timeout_s=20)
        return recorded.passed == result.passed == result.total, outputs

    with ThreadPoolExecutor(in_flight) as pool:
        done = list(pool.map(one, problems))
    return sum(ok for ok, _ in done), [outputs for _, outputs in done]


def lad_warm(client: SandboxClient, problems: list[Problem], expected: list) -> int:
    """Tasks passing all inputs, against known expected outputs (the client splits the programs
    whose expected outputs make an oversized request)."""
    results = client.evaluate_many([(p.reference_solution, _checks(p, e)) for p, e in zip(problems, expected)],
                                   timeout_s=20)
    return sum(r.passed == r.total for r in results)


class ServiceCpu:
    """CPU seconds of the service and every sandbox under it, through a cgroup of its own (cgroup
    v1 cpuacct, or v2); ``None`` where none can be made (not root, no cgroup file system)."""

    def __init__(self) -> None:
        self.dir: Path | None = None
        own = {c: path for _, c, path in (line.split(":", 2) for line in Path("/proc/self/cgroup").read_text().split())}
        candidates = [(Path("/sys/fs/cgroup/cpuacct") / own.get("cpuacct", own.get("cpu,cpuacct", "/")).lstrip("/"),
                       "cpuacct.usage")]
        for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
            if (root / "cgroup.controllers").exists():
                candidates.append((root / own.get("", "/").lstrip("/"), "cpu.stat"))
        for base, usage in candidates:
            try:
                d = base / f"lad-bench-{os.getpid()}"
                d.mkdir()
            except OSError:
                continue
            if (d / usage).exists():
                self.dir, self.usage = d, usage
                return
            d.rmdir()

    def command(self, argv: list[str]) -> list[str]:
        """``argv``, started inside the cgroup."""
        if self.dir is None:
            return argv
        return ["sh", "-c", f'echo $$ > "{self.dir}/cgroup.procs" && exec "$0" "$@"', *argv]

    def seconds(self) -> float | None:
        if self.dir is None:
            return None
        text = (self.dir / self.usage).read_text()
        if self.usage == "cpuacct.usage":
            return int(text) / 1e9
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) / 1e6

    def remove(self) -> None:
        for _ in range(100):
            if self.dir is None:
                return
            try:
                self.dir.rmdir()
                return
            except OSError:  # the sandboxes are still on their way out
                time.sleep(0.05)


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def evalplus_run(python: str, dataset: Dataset, samples: Path, cache: Path, data: Path) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of EvalPlus and its worker processes, its output); ``data``: the
    plain benchmark file, which EvalPlus reads instead of downloading its release."""
    env = dict(os.environ, **{dataset.override: str(data)}, XDG_CACHE_HOME=str(cache))
    start, cpu = time.perf_counter(), _cpu_children()
    done = subprocess.run([python, "-m", "evalplus.evaluate", "--dataset", dataset.evalplus, "--samples", str(samples),
                           "--parallel", "2", "--i-just-wanna-run"], env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - start, _cpu_children() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"evalplus failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return elapsed, cpu, done.stdout + done.stderr


def _evalplus_score(output: str, dataset: Dataset, tasks: int) -> str:
    found = re.findall(re.escape(dataset.evalplus) + r"\+ \(base \+ extra tests\)\s*\n\s*pass@1:\s*([0-9.]+)", output)
    return f"{round(float(found[-1]) * tasks)}/{tasks}" if found else "?"


Row = tuple[str, float, "float | None", str]  # name, wall seconds, CPU seconds, tasks passed


def evalplus_round(python: str, dataset: Dataset, tasks: list[dict], work: Path) -> list[Row]:
    """Cold (its ground-truth cache emptied first) and warm."""
    samples = work / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": t["task_id"], "solution": t["prompt"] + t["canonical_solution"]})
                               + "\n" for t in tasks))
    cache = work / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    rows = []
    for name in ("cold (computes ground truth)", "warm (cached ground truth)"):
        for f in work.glob("*eval_results.json"):
            f.unlink()
        seconds, cpu, out = evalplus_run(python, dataset, samples, cache, work / dataset.file)
        rows.append((f"EvalPlus 0.3.1, {name}", seconds, cpu, _evalplus_score(out, dataset, len(tasks))))
    return rows


def lad_round(client: SandboxClient, problems: list[Problem], in_flight: int, service: ServiceCpu) -> list[Row]:
    """Cold and warm; CPU seconds are the client's (this process) plus the service's with its sandboxes."""
    def cpu() -> float | None:
        seconds = service.seconds()
        return None if seconds is None else seconds + _cpu_self()

    start, cpu0 = time.perf_counter(), cpu()
    solved, expected = lad_cold(client, problems, in_flight)
    cold, cpu1 = time.perf_counter() - start, cpu()
    start = time.perf_counter()
    warm_solved = lad_warm(client, problems, expected)
    warm, cpu2 = time.perf_counter() - start, cpu()
    spent = (None, None) if cpu0 is None else (cpu1 - cpu0, cpu2 - cpu1)
    return [("lad sandbox, cold (records expected outputs)", cold, spent[0], f"{solved}/{len(problems)}"),
            ("lad sandbox, warm (expected outputs known)", warm, spent[1], f"{warm_solved}/{len(problems)}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", choices=sorted(DATASETS), default="humanevalplus", help="the EvalPlus set")
    ap.add_argument("--evalplus-python", default="/tmp/evalplus-venv/bin/python",
                    help="interpreter of a virtual environment with evalplus==0.3.1")
    ap.add_argument("--workers", type=int, default=2, help="service workers (EvalPlus gets --parallel 2)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (the machine is shared)")
    args = ap.parse_args()
    console = Console()
    if not Path(args.evalplus_python).exists():
        sys.exit(f"no interpreter at {args.evalplus_python}; see this script's docstring to install evalplus")
    dataset = DATASETS[args.benchmark]
    lines = read_text(dataset.file).splitlines()
    tasks = [json.loads(line) for line in lines]
    problems = [ADAPTERS[args.benchmark](t, FieldMap()) for t in tasks]
    inputs = sum(len(p.tests) for p in problems)

    work = Path(tempfile.mkdtemp(prefix="bench-evalplus-"))
    (work / dataset.file).write_text("".join(_evalplus_line(line) + "\n" for line in lines))
    service = ServiceCpu()
    port = free_port()
    proc = subprocess.Popen(service.command([sys.executable, "-m", "lad.sandbox", "serve", "--port", str(port),
                                             "--workers", str(args.workers)]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    rounds: list[list[Row]] = []
    try:
        problem = wait_until_healthy(proc, url + "/healthz", 60)
        if problem is not None:
            sys.exit(f"the sandbox service did not start: {problem}")
        # twice as many requests in flight as workers: a worker never waits while the client encodes
        # the next request or decodes the last answer (at most `workers` programs run at once)
        with SandboxClient(url, concurrency=2 * args.workers) as client:
            for _ in range(args.rounds):  # alternating, so both sides meet the same load on a shared machine
                rounds.append(evalplus_round(args.evalplus_python, dataset, tasks, work)
                              + lad_round(client, problems, 2 * args.workers, service))
    finally:
        stop_process_group(proc)
        service.remove()
        shutil.rmtree(work, ignore_errors=True)

    table = Table(title=f"{dataset.title} canonical solutions, {inputs} inputs, 2 workers each, {os.cpu_count()} CPUs")
    for col in ("evaluator", "seconds per round", "best", "CPU seconds per round", "tasks passed"):
        table.add_column(col, justify="left" if col == "evaluator" else "right")
    best, best_cpu = [], []
    for i, (name, *_) in enumerate(rounds[0]):
        times, cpus = [r[i][1] for r in rounds], [r[i][2] for r in rounds]
        best.append(min(times))
        best_cpu.append(None if None in cpus else min(cpus))
        table.add_row(name, " ".join(f"{t:.1f}" for t in times), f"{min(times):.1f}",
                      " ".join("n/a" if c is None else f"{c:.1f}" for c in cpus), " ".join(r[i][3] for r in rounds))
    console.print(table)
    console.print(f"ratio EvalPlus / lad, wall clock (best rounds): cold {best[0] / best[2]:.2f}x, "
                  f"warm {best[1] / best[3]:.2f}x (above 1: lad is faster)")
    if None not in best_cpu:
        console.print(f"ratio EvalPlus / lad, CPU seconds (least per round): cold {best_cpu[0] / best_cpu[2]:.2f}x, "
                      f"warm {best_cpu[1] / best_cpu[3]:.2f}x (above 1: lad uses less)")


if __name__ == "__main__":
    main()
