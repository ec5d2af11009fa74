"""Sandboxed code execution: bubblewrap isolation, the three test protocols, the HTTP service
and its client. See lad/sandbox/client.py for the API the rewards and the evaluator use."""

from lad.sandbox.config import SandboxConfig
from lad.sandbox.models import EvaluateRequest, EvaluateResult, RunRequest, RunResult, Verdict

__all__ = ["SandboxConfig", "EvaluateRequest", "EvaluateResult", "RunRequest", "RunResult", "Verdict"]
