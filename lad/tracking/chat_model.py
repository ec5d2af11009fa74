"""A logged model as a chat model: the MLflow pyfunc that the registry's versions are.

``mlflow.pyfunc.load_model("models:/lad-policy@champion").predict({"messages": [...]})`` and
``mlflow models serve`` answer chat requests (MLflow's chat schema, the OpenAI chat completions
body: ``messages``, ``temperature``, ``max_tokens``, ``top_p``, ``stop``, ``n``) with OpenAI-style
chat completions. The messages become the prompt the model was trained and evaluated on
(:mod:`lad.chat`: the tokenizer's own chat template with the generation prompt), and the answer is
decoded by the project's rollout engine with the generation settings the model was evaluated with
(:class:`ChatSettings`, the model's ``model_config``) unless the request sets its own.

What is logged: the checkpoint folder's files as they are (the artifact ``checkpoint``; the weights
are never loaded at log time), lad's Python sources as the model's code (so the model loads where
lad is not installed, and runs the code it was evaluated with), and the settings as the
``model_config``. A request of one conversation gets one chat completion (a dict); a DataFrame of
several gets a list of them.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal, Mapping

import mlflow.pyfunc
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

CHECKPOINT = "checkpoint"  # the artifact that holds the checkpoint folder
# Request fields of MLflow's chat schema that this model cannot honour: refused rather than ignored.
_UNSUPPORTED = ("tools", "top_k", "frequency_penalty", "presence_penalty", "custom_inputs")


class ChatSettings(BaseModel):
    """How a logged chat model answers when the request does not say: by default greedy, 64
    tokens; the pipeline's register step sets those the model was evaluated with."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0, description="softmax temperature; 0: greedy decoding")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass; 1.0 disables it")
    max_new_tokens: int = Field(64, gt=0, description="longest answer, in tokens (a request's max_tokens)")
    stop: list[str] = Field([], description="stop strings besides the tokenizer's EOS")
    engine: Literal["hf", "native"] = Field("hf", description="rollout engine that decodes (lad.rollout)")
    model_name: str = Field("lad", min_length=1, description="the chat completions' `model` field")


def _given(value: Any) -> bool:
    """A request field that is set (a DataFrame of several requests holds None or NaN where one lacks it)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def request_sampling(request: dict, settings: ChatSettings):
    """The SamplingParams of one chat request: its temperature, max_tokens, top_p, stop and n
    over the model's settings. ValueError names a field the model cannot honour."""
    from lad.rollout.base import SamplingParams

    for key in _UNSUPPORTED:
        value = request.get(key)
        if _given(value) and not (hasattr(value, "__len__") and len(value) == 0):
            raise ValueError(f"chat request field {key!r}: not supported by this model; leave it out")
    if _given(request.get("stream")) and request["stream"]:
        raise ValueError("chat request field 'stream': streaming is not supported; leave it out or set it to false")
    stop = request.get("stop")
    given = {
        "temperature": request.get("temperature"), "top_p": request.get("top_p"), "max_new_tokens": request.get("max_tokens"),
        "n": request.get("n"), "stop": [stop] if isinstance(stop, str) else (list(stop) if _given(stop) else None),
    }
    base = {"temperature": settings.temperature, "top_p": settings.top_p, "max_new_tokens": settings.max_new_tokens,
            "stop": settings.stop}
    chosen = {**base, **{k: v for k, v in given.items() if _given(v)}}
    for key in ("max_new_tokens", "n"):
        if key in chosen and float(chosen[key]).is_integer():
            chosen[key] = int(chosen[key])  # a DataFrame column with gaps holds its integers as floats
    try:
        return SamplingParams(**chosen)
    except ValidationError as err:
        where = {"max_new_tokens": "max_tokens"}
        first = err.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "request"
        raise ValueError(f"chat request field {where.get(field, field)!r}: {first['msg']}") from None


def request_messages(request: dict) -> list[dict]:
    """The conversation of one request as the chat template takes it: role and content of each message."""
    messages = request.get("messages")
    if messages is None or len(messages) == 0:
        raise ValueError("chat request field 'messages': expected a non-empty list of {role, content}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not m.get("role"):
            raise ValueError(f"chat request field 'messages', message {i}: expected {{role, content}}, got {m!r}")
        out.append({"role": str(m["role"]), "content": m.get("content") or ""})
    return out


def chat_completion(completions: list, prompt_tokens: int, model_name: str) -> dict:
    """An OpenAI-style chat completion of one request: a choice per completion, token usage."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "choices": [{"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason}
                    for i, c in enumerate(completions)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": sum(len(c.token_ids) for c in completions),
                  "total_tokens": prompt_tokens + sum(len(c.token_ids) for c in completions)},
    }


def log_chat_model(name: str, checkpoint: str, settings: ChatSettings, metadata: Mapping[str, Any] | None = None) -> str:
    """Log the checkpoint folder as a chat model of the active run; returns its ``models:/m-...`` URI.

    The input example is written beside the model but not run: MLflow would load the weights to
    check it, which is what logging a folder avoids (MLflow's transformers flavor skips the check for
    a folder the same way).
    """
    import tempfile

    from mlflow.models import Model, ModelSignature
    from mlflow.types.llm import CHAT_MODEL_INPUT_SCHEMA, CHAT_MODEL_OUTPUT_SCHEMA

    from lad.tracking.runs import model_requirements

    with tempfile.TemporaryDirectory(prefix="lad-chat-model-") as tmp:
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=sys.modules[__name__],
            metadata=dict(metadata or {}),
            validate_serving_input=False,
            python_model=ChatPolicy(),
            artifacts={CHECKPOINT: checkpoint},
            code_paths=[_lad_sources(Path(tmp))],
            model_config=settings.model_dump(),
            signature=ModelSignature(CHAT_MODEL_INPUT_SCHEMA, CHAT_MODEL_OUTPUT_SCHEMA),
            input_example={"messages": [{"role": "user", "content": "What is 2 + 3?"}]},
            pip_requirements=model_requirements(),
        )
    return info.model_uri


def save_model(path, mlflow_model=None, validate_serving_input: bool = True, **kwargs) -> None:
    """This module as the flavor ``Model.log`` saves with: pyfunc's ``save_model``, minus the
    switch that ``Model.log`` itself reads."""
    mlflow.pyfunc.save_model(path, mlflow_model=mlflow_model, **kwargs)


def _lad_sources(dest: Path) -> str:
    """A copy of the lad package's Python files (no data, no caches) at ``dest/lad``; returns its path."""
    import shutil

    import lad

    def data_files(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n == "__pycache__" or (not n.endswith(".py") and not (Path(folder) / n).is_dir())]

    target = dest / "lad"
    shutil.copytree(Path(lad.__file__).parent, target, ignore=data_files)
    return str(target)


class ChatPolicy(mlflow.pyfunc.PythonModel):
    """The pyfunc: loads the checkpoint with lad.modeling, answers with a lad.rollout engine."""

    def load_context(self, context) -> None:
        import torch

        from lad.modeling import load_model
        from lad.rollout import build_rollout

        self.settings = ChatSettings.model_validate(context.model_config or {})
        model, self.tokenizer = load_model(context.artifacts[CHECKPOINT])
        if torch.cuda.is_available():
            model = model.to("cuda")
        self.engine = build_rollout(self.settings.engine, model, self.tokenizer)
        self.lock = threading.Lock()  # a server may call predict from several threads; the engine holds one model

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """One chat completion per row (request) of ``model_input``, as MLflow hands over chat requests
        once it has checked them against the signature."""
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from lad.chat import prompt_ids

        rows = model_input.to_dict(orient="records")
        answers = []
        for row in rows:
            try:
                messages, sampling = request_messages(row), request_sampling(row, self.settings)
            except ValueError as err:
                raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
            (ids,) = prompt_ids(self.tokenizer, [messages])
            with self.lock:
                (completions,) = self.engine.generate_ids([ids], sampling)
            answers.append(chat_completion(completions, len(ids), self.settings.model_name))
        return answers[0] if len(answers) == 1 else answers
