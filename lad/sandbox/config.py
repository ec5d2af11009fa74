"""Settings of the sandbox executor and service (one pydantic object, documented defaults)."""

from __future__ import annotations

from typing import Annotated, Literal, Optional

from pydantic import BaseModel, Field


class SandboxConfig(BaseModel):
    """How programs are isolated and limited. Request values above a ``max_*`` are refused."""

    isolation: Literal["bwrap", "none"] = Field(
        "bwrap", description="bwrap: bubblewrap namespaces; none: plain child processes, for trusted local use only")
    python: Optional[str] = Field(
        None, description="interpreter inside the sandbox; default: /usr/local/bin/python3 or /usr/bin/python3")
    bwrap: str = Field("bwrap", description="bubblewrap executable")
    packages: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(
        ["sortedcontainers"], description="pure-Python packages, importable by lad's own interpreter, that programs may "
                                          "import too (read-only; nothing else of lad's environment): LeetCode's judge "
                                          "offers sortedcontainers to every program")
    host_uid: int = Field(
        65534, description="host uid the sandboxes run as when the service runs as root (RLIMIT_NPROC never binds root)")
    hash_seed: int = Field(
        0, ge=0, le=4294967295, description="PYTHONHASHSEED of every sandbox: str/bytes hashes, and so set and dict "
                                            "order of strings, are the same in every worker and every fresh sandbox")
    tmpfs_mb: int = Field(64, gt=0, description="size of each private writable tmpfs: the work dir /tmp, and /dev/shm")
    default_timeout_s: float = Field(5.0, gt=0, description="wall-clock limit per run or per test")
    max_timeout_s: float = Field(60.0, gt=0)
    default_memory_mb: int = Field(1024, gt=0, description="address-space limit per process")
    max_memory_mb: int = Field(4096, gt=0)
    max_request_s: float = Field(300.0, gt=0, description="wall-clock budget of one whole evaluate request")
    output_limit_bytes: int = Field(1 << 20, gt=0, description="cap on captured stdout, and on stderr, per run or test")
    value_limit_bytes: int = Field(16 << 20, gt=0, description="cap on one returned value of a call test (JSON), "
                                                               "unless the request sets value_limit_mb")
    max_value_limit_bytes: int = Field(256 << 20, gt=0, description="largest value_limit_mb a request may ask for")
    nproc: int = Field(32, gt=1, description="processes (and threads) per sandbox")
    nofile: int = Field(256, gt=16, description="open files per process")
    fsize_mb: int = Field(16, gt=0, description="largest file a program may write")
    grace_s: float = Field(5.0, gt=0, description="allowance on top of the time limits before the sandbox is killed")
    max_jobs_per_sandbox: int = Field(
        200, gt=0, description="jobs one warm sandbox runs before it is replaced by a fresh one (it is replaced at "
                               "once after a timeout, memory or output limit, or a failed cleanup)")
