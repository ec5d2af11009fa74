"""Folder transfers through lad.storage against a local S3 server (moto, in its own process).

Prints, measured in the same run on the same server:
- publish time of a folder with a bounded thread pool vs one worker (the baseline),
- a second, cached read of the folder vs the first read (which downloads and verifies).

A local server has no network latency, so the pool's gain here is a floor for what a remote
store (tens of ms per request) gives.

    python benchmarks/bench_storage.py [--files 64] [--size-kib 256] [--workers 8]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lad import storage
from lad.local_server import free_port
from lad.storage import StorageConfig


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start within 60 s")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=64)
    parser.add_argument("--size-kib", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    proc, endpoint = start_moto()
    os.environ.update(
        {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    )
    work = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        src = work / "src"
        rng = random.Random(0)
        for i in range(args.files):
            p = src / f"shard-{i // 16:02d}" / f"file-{i:03d}.bin"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(rng.randbytes(args.size_kib * 1024))
        total_mib = args.files * args.size_kib / 1024

        results = {1: [], args.workers: []}
        for r in range(args.repeats):
            for workers in results:  # alternate so drift in machine load hits both alike
                cfg = StorageConfig(max_workers=workers, cache_dir=work / "cache", progress=False)
                results[workers].append(timed(lambda: storage.put_dir(src, f"s3://bench/w{workers}/r{r}", config=cfg)))
        base, pooled = min(results[1]), min(results[args.workers])
        print(f"folder: {args.files} files x {args.size_kib} KiB = {total_mib:.1f} MiB, best of {args.repeats}")
        print(f"publish, 1 worker:        {base:.3f} s ({total_mib / base:.1f} MiB/s)")
        print(f"publish, {args.workers} workers:       {pooled:.3f} s ({total_mib / pooled:.1f} MiB/s)")
        print(f"speed-up of the pool:     {base / pooled:.2f}x")

        cfg = StorageConfig(max_workers=args.workers, cache_dir=work / "cache", progress=False)
        cold, warm = [], []
        for r in range(args.repeats):
            shutil.rmtree(work / "cache", ignore_errors=True)
            cold.append(timed(lambda: storage.get_dir(f"s3://bench/w{args.workers}/r{r}", config=cfg)))
            warm.append(timed(lambda: storage.get_dir(f"s3://bench/w{args.workers}/r{r}", config=cfg)))
        print(f"first read (download + verify): {min(cold):.3f} s")
        print(f"cached read (manifest only):    {min(warm):.3f} s")
        print(f"cached read is {min(cold) / min(warm):.1f}x faster")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
