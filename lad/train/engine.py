"""Training engines: one interface over DeepSpeed (the cluster engine) and plain torch (local runs).

A trainer drives either engine the same way, once per micro-batch:

    out = engine.forward(input_ids=..., attention_mask=...)
    engine.backward(share)      # this rank's share of the global loss
    update = engine.step()      # None, or the update's stats at an accumulation boundary

``share`` is normalised by the trainer so that the *sum* of shares over all micro-batches and
ranks of one optimizer step is the loss of the whole global batch; the engines undo the
averaging that gradient accumulation and data-parallel reduction would otherwise apply, so
one process with accumulation and several processes without it compute the same update.

Optimizer and learning-rate schedule are built here (AdamW, linear warm-up, cosine decay) and
handed to the engine, so both engines step the very same torch objects. Under DeepSpeed a torch
optimizer also avoids compiling DeepSpeed's CPU Adam extension (ZeRO-Offload included).
"""

from __future__ import annotations

import contextlib
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable, Iterator, Literal, Optional

import torch
from pydantic import BaseModel, Field, model_validator

from lad.local_server import free_port
from lad.train.lora import frozen_names


class OptimConfig(BaseModel):
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.01, ge=0, description="decoupled weight decay (not applied to biases and norms)")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam betas")
    eps: float = Field(1e-8, gt=0)
    warmup_steps: int = Field(20, ge=0, description="optimizer steps of linear warm-up from 0")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final learning rate as a fraction of lr")
    max_grad_norm: float = Field(1.0, ge=0, description="global gradient-norm clip; 0 disables")


class EngineConfig(BaseModel):
    """Which engine runs the optimisation, and how."""

    name: Literal["deepspeed", "torch"] = Field("deepspeed", description="deepspeed (any world size) or torch (one process)")
    zero_stage: Optional[int] = Field(
        None, ge=0, le=3, description="DeepSpeed ZeRO stage: 1 shards optimizer states, 2 also gradients, 3 also weights; "
        "None: 2 on GPU, 0 on CPU")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: optimizer states and the Adam step in CPU memory (zero_stage 1-3)")
    offload_params: bool = Field(False, description="weights in CPU memory between uses (zero_stage 3; with offload_optimizer: ZeRO-Infinity)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on GPU, fp32 on CPU")
    dist_backend: Optional[str] = Field(None, description="torch.distributed backend; default nccl on GPU, gloo on CPU")

    @model_validator(mode="after")
    def _zero_needs_deepspeed(self) -> "EngineConfig":
        if self.name == "torch" and self.zero_stage:
            raise ValueError("zero_stage needs engine name 'deepspeed'")
        if self.offload_optimizer and not self.zero_stage:
            raise ValueError("offload_optimizer needs engine name 'deepspeed' and zero_stage 1, 2 or 3")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs engine name 'deepspeed' and zero_stage 3")
        return self


def resolve_zero_stage(stage: Optional[int], device: torch.device) -> int:
    # ZeRO-2 shards gradients and optimizer states at the cost of no extra communication over
    # plain data parallelism; on CPU (one process, tests) there is nothing to shard.
    if stage is None:
        return 2 if device.type == "cuda" else 0
    return stage


def deepspeed_config(optim: OptimConfig, engine: EngineConfig, *, device: torch.device, precision: str,
                     micro_batch_size: int, grad_accum: int) -> dict:
    """The DeepSpeed config dict of ``engine`` on ``device``."""
    zero: dict = {"stage": resolve_zero_stage(engine.zero_stage, device)}
    # Pinned host memory speeds up the GPU <-> CPU copies; there are none on CPU.
    offload = {"device": "cpu", "pin_memory": device.type == "cuda"}
    if engine.offload_optimizer:
        zero["offload_optimizer"] = offload
    if engine.offload_params:
        zero["offload_param"] = offload
    return {
        # Offloaded, the states are stepped by the same torch AdamW on the CPU (foreach kernels);
        # DeepSpeed's faster CPU Adam would compile a C++ extension at first use (minutes).
        "zero_force_ds_cpu_optimizer": False,
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": optim.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Learning-rate factor after ``step`` optimizer steps: linear warm-up, then cosine decay."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    # Biases and norm weights are 1-D; decaying them only shrinks scales the data does not ask for.
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # No empty group (LoRA trains matrices only): DeepSpeed drops those, and the scheduler would no
    # longer match the optimizer's groups.
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def fn(step: int) -> float:
        return lr_multiplier(step, warmup_steps=cfg.warmup_steps, total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment (torchrun, deepspeed, PyTorchJob)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))



def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info()[2])
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("precision bf16 needs a GPU; use fp32 (or auto) on CPU")
    return precision


class TrainEngine(ABC):
    """What the trainer needs from an engine; see the module docstring for the call protocol."""

    rank: int
    world_size: int
    device: torch.device
    grad_accum: int

    @property
    @abstractmethod
    def module(self) -> torch.nn.Module:
        """The wrapped Hugging Face model, for what its class and config tell (under ZeRO-3 its
        parameters are partitioned: use ``forward`` or ``full_model`` for the weights)."""

    @abstractmethod
    def forward(self, **batch):
        """The model's forward pass on one micro-batch (under the engine's precision)."""

    @abstractmethod
    def backward(self, share: torch.Tensor) -> None:
        """Accumulate gradients of this rank's share of the global loss."""

    @abstractmethod
    def step(self) -> Optional[dict]:
        """End of a micro-batch; at an accumulation boundary update, and return {"grad_norm": float | None}."""

    @abstractmethod
    def lr(self) -> float:
        """Learning rate the next update will use."""

    @abstractmethod
    def save_state(self, directory: Path) -> None:
        """Write model, optimizer and scheduler state into ``directory`` (a collective call)."""

    @abstractmethod
    def load_state(self, directory: Path) -> None:
        """Restore what ``save_state`` wrote."""

    @abstractmethod
    @contextlib.contextmanager
    def full_model(self) -> Iterator[torch.nn.Module]:
        """The Hugging Face model with complete (gathered) weights, for saving (a collective call)."""

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()

    def all_reduce_sum(self, value: float) -> float:
        if self.world_size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.all_reduce(t)
        return float(t.item())


class TorchEngine(TrainEngine):
    """Plain torch, one process: the simplest local runs and the reference for DeepSpeed."""

    def __init__(self, model: torch.nn.Module, optim: OptimConfig, engine: EngineConfig, *, total_steps: int, grad_accum: int):
        rank, world, _ = dist_info()
        if world > 1:
            raise ValueError(f"engine 'torch' runs one process, but WORLD_SIZE={world}; use engine 'deepspeed'")
        self.rank, self.world_size, self.grad_accum = 0, 1, grad_accum
        self.device = default_device()
        self.precision = resolve_precision(engine.precision, self.device)
        self.model = model.to(self.device)
        self.model.train()
        self.optimizer = build_optimizer(self.model, optim)
        self.scheduler = build_scheduler(self.optimizer, optim, total_steps)
        self.max_grad_norm = optim.max_grad_norm
        self._micro = 0

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def forward(self, **batch):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(**batch)

    def backward(self, share: torch.Tensor) -> None:
        share.backward()

    def step(self) -> Optional[dict]:
        self._micro += 1
        if self._micro % self.grad_accum:
            return None
        norm = None
        if self.max_grad_norm > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": norm}

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_state(self, directory: Path) -> None:
        # Frozen weights (a LoRA run's base) are the loaded model's: only what trains is saved.
        frozen = frozen_names(self.model)
        weights = self.model.state_dict() if frozen is None else {
            name: p.detach() for name, p in self.model.named_parameters() if name not in frozen}
        torch.save({"model": weights, "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()},
                   directory / "engine_state.pt")

    def load_state(self, directory: Path) -> None:
        state = torch.load(directory / "engine_state.pt", map_location=self.device, weights_only=True)
        frozen = frozen_names(self.model)
        result = self.model.load_state_dict(state["model"], strict=frozen is None)
        if frozen is not None and (set(result.missing_keys) - frozen or result.unexpected_keys):
            raise ValueError(f"checkpoint {directory} does not hold this model's trained weights: missing "
                             f"{sorted(set(result.missing_keys) - frozen)[:3]}, unexpected {result.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    @contextlib.contextmanager
    def full_model(self) -> Iterator[torch.nn.Module]:
        yield self.model


class DeepSpeedEngine(TrainEngine):
    """DeepSpeed with a torch AdamW and LambdaLR; ZeRO 0-3; gloo on CPU, nccl on GPU."""

    TAG = "engine"

    def __init__(self, model: torch.nn.Module, optim: OptimConfig, engine: EngineConfig, *, total_steps: int, grad_accum: int, micro_batch_size: int):
        import deepspeed

        rank, world, local_rank = dist_info()
        if "MASTER_ADDR" not in os.environ:
            # Launched without torchrun/deepspeed: a one-process group on a free local port.
            if world > 1:
                raise ValueError(f"WORLD_SIZE={world} but MASTER_ADDR is not set; launch with torchrun")
            os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"})
        self.device = default_device()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        backend = engine.dist_backend or ("nccl" if self.device.type == "cuda" else "gloo")
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
        self.rank, self.world_size, self.grad_accum = rank, world, grad_accum
        self.precision = resolve_precision(engine.precision, self.device)
        optimizer = build_optimizer(model, optim)
        scheduler = build_scheduler(optimizer, optim, total_steps)
        config = deepspeed_config(optim, engine, device=self.device, precision=self.precision,
                                  micro_batch_size=micro_batch_size, grad_accum=grad_accum)
        self.ds, _, _, self.scheduler = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config)
        self.ds.train()
        self.zero_stage = config["zero_optimization"]["stage"]

    @property
    def module(self) -> torch.nn.Module:
        return self.ds.module

    def forward(self, **batch):
        return self.ds(**batch)

    def backward(self, share: torch.Tensor) -> None:
        # DeepSpeed averages over ranks; the trainer's shares are meant to be summed.
        self.ds.backward(share * self.world_size, scale_wrt_gas=False)

    def step(self) -> Optional[dict]:
        boundary = self.ds.is_gradient_accumulation_boundary()
        self.ds.step()
        if not boundary:
            return None
        norm = self.ds.get_global_grad_norm()
        return {"grad_norm": None if norm is None else float(norm)}

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_state(self, directory: Path) -> None:
        frozen = frozen_names(self.ds.module) is not None  # a LoRA run's base: the loaded model's, not saved
        self.ds.save_checkpoint(str(directory), tag=self.TAG, save_latest=False, exclude_frozen_parameters=frozen)

    def load_state(self, directory: Path) -> None:
        path, _ = self.ds.load_checkpoint(str(directory), tag=self.TAG, load_module_strict=frozen_names(self.ds.module) is None)
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed engine state under {directory}/{self.TAG}")

    @contextlib.contextmanager
    def full_model(self) -> Iterator[torch.nn.Module]:
        import deepspeed

        module = self.ds.module
        if self.zero_stage == 3:
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                yield module
        else:
            yield module


EngineFactory = Callable[..., TrainEngine]

ENGINES: dict[str, EngineFactory] = {
    "torch": lambda model, optim, engine, *, total_steps, grad_accum, micro_batch_size: TorchEngine(
        model, optim, engine, total_steps=total_steps, grad_accum=grad_accum
    ),
    "deepspeed": DeepSpeedEngine,
}


def build_engine(model: torch.nn.Module, optim: OptimConfig, engine: EngineConfig, *, total_steps: int, grad_accum: int, micro_batch_size: int) -> TrainEngine:
    return ENGINES[engine.name](model, optim, engine, total_steps=total_steps, grad_accum=grad_accum, micro_batch_size=micro_batch_size)
