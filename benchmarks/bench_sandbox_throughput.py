"""Trivial programs per second: the sandbox service versus a naive baseline that starts one
`bwrap ... python3 -c` subprocess per program, both driven by the same number of client threads,
measured in the same run.

    .venv/bin/python benchmarks/bench_sandbox_throughput.py [--programs 200] [--threads 2] [--out results.json]

After the rounds, one more batch of programs through the service measures where a request's
CPU goes: this client, the service process, and everything below it (sandboxes, programs).
With --out, the numbers are appended to that JSON file (a list, one entry per run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from rich.console import Console
from rich.table import Table

from lad.local_server import free_port, stop_process_group, wait_until_healthy
from lad.sandbox.client import SandboxClient
from lad.sandbox.config import SandboxConfig
from lad.sandbox.isolation import host_user

PROGRAM = "print(sum(range(10)))"
EXPECTED = "45\n"


def naive_command(code: str) -> list[str]:
    """What one would write by hand: every namespace, /usr read-only, a tmpfs, python3 -c."""
    return [shutil.which("bwrap"), "--unshare-all", "--die-with-parent", "--new-session", "--clearenv",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "/usr/bin/python3", "-c", code]


def naive_run(_: int) -> None:
    out = subprocess.run(naive_command(PROGRAM), capture_output=True, text=True, timeout=30,
                         **host_user(SandboxConfig()))
    if out.stdout != EXPECTED:
        raise RuntimeError(f"naive baseline run failed: {out.stderr[-300:]}")



def _cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of a process; zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
    return found


class SandboxCpu:
    """CPU seconds of the service's sandboxes (bwrap and the runner below it, whose count
    includes the programs it reaped), sampled every 20 ms: a recycled sandbox is killed and
    never reaped into anyone's count, so its last sample stands for it."""

    def __init__(self, service_pid: int):
        self.service_pid = service_pid
        self.last: dict[int, float] = {}
        self.first: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> None:
        for bwrap in _children(self.service_pid):
            for pid in (bwrap, *_children(bwrap)):
                used = sum(_cpu(pid))
                if used:
                    self.first.setdefault(pid, used)
                    self.last[pid] = used

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self._read()

    def __enter__(self) -> "SandboxCpu":
        self._read()
        self.start = dict(self.first)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._read()

    def seconds(self) -> float:
        return sum(used - self.start.get(pid, 0.0) for pid, used in self.last.items())


def client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(fn, n: int, threads: int) -> float:
    """Programs per second for n calls of fn over `threads` threads (one warm-up call each)."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, range(threads)))
        start = time.perf_counter()
        list(pool.map(fn, range(n)))
        return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--programs", type=int, default=200, help="programs per measurement")
    ap.add_argument("--threads", type=int, default=2, help="client threads")
    ap.add_argument("--workers", type=int, default=2, help="service workers")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each (the machine is shared)")
    ap.add_argument("--out", default=None, help="append this run's numbers to this JSON file")
    args = ap.parse_args()
    console = Console()
    if shutil.which("bwrap") is None:
        sys.exit("bubblewrap is not installed (apt-get install bubblewrap)")

    load_before = round(os.getloadavg()[0], 2)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lad.sandbox", "serve", "--port", str(port), "--workers", str(args.workers)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        problem = wait_until_healthy(proc, url + "/healthz", 60)
        if problem is not None:
            sys.exit(f"the service did not start: {problem}")
        client = SandboxClient(url, concurrency=args.threads)

        def service_run(_: int) -> None:
            r = client.run(PROGRAM)
            if r.stdout != EXPECTED:
                raise RuntimeError(f"service run failed: {r}")

        service, naive = [], []
        for _ in range(args.rounds):
            naive.append(timed(naive_run, args.programs, args.threads))
            service.append(timed(service_run, args.programs, args.threads))
        before = client_cpu(), _cpu(proc.pid)[0]
        with SandboxCpu(proc.pid) as sandboxes:
            timed(service_run, args.programs, args.threads)
        after = client_cpu(), _cpu(proc.pid)[0]
        client.close()
    finally:
        stop_process_group(proc)

    best_service, best_naive = max(service), max(naive)
    table = Table(title=f"Trivial programs per second, {args.threads} client threads, {args.programs} per round, "
                        f"{os.cpu_count()} CPUs")
    table.add_column("path")
    table.add_column("programs/s per round", justify="right")
    table.add_column("best", justify="right")
    table.add_row("naive: bwrap ... python3 -c per program", " ".join(f"{x:.1f}" for x in naive), f"{best_naive:.1f}")
    table.add_row(f"lad sandbox service ({args.workers} workers)", " ".join(f"{x:.1f}" for x in service),
                  f"{best_service:.1f}")
    console.print(table)
    console.print(f"ratio service / naive (best rounds): {best_service / best_naive:.2f}x")
    split = {"client": after[0] - before[0], "service": after[1] - before[1], "sandboxes": sandboxes.seconds()}
    split = {k: round(v / args.programs * 1e3, 2) for k, v in split.items()}
    console.print("CPU ms per request (one more batch): " + ", ".join(f"{k} {v}" for k, v in split.items()))
    if args.out:
        runs = json.loads(open(args.out).read()) if os.path.exists(args.out) else []
        runs.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_average_before": load_before,
                     "cpus": os.cpu_count(), "programs": args.programs, "threads": args.threads, "workers": args.workers,
                     "naive_per_s": [round(x, 1) for x in naive], "service_per_s": [round(x, 1) for x in service],
                     "ratio_best": round(best_service / best_naive, 3), "cpu_ms_per_request": split})
        with open(args.out, "w") as fh:
            json.dump(runs, fh, indent=1)


if __name__ == "__main__":
    main()
