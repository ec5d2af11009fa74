"""SFT warm-up: supervised fine-tuning on (prompt, demonstration) pairs before RL.

One global batch per optimizer step, ``micro_batch_size * grad_accum * world_size`` examples,
taken from a length-grouped plan that depends only on (seed, epoch). The loss is the mean
next-token NLL over the completion tokens of the whole global batch; each micro-batch backs
up its share (its NLL sum over the global token count), so accumulation steps and data-parallel
ranks add up to exactly the full-batch gradient.

    lad sft configs/sft/tiny.yaml [--output-dir DIR] [--resume]
    torchrun --nproc_per_node N -m lad.cli sft configs/sft/tiny.yaml   # data-parallel

writes ``DIR/model`` (Hugging Face format with a model card; with ``lora``, the adapters merged
in and ``DIR/adapter`` beside it), ``DIR/metrics.json`` and checkpoints under
``DIR/checkpoints`` (or ``checkpoint.dir``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Optional

import torch
from pydantic import BaseModel, Field

from lad.config import load_yaml_config
from lad.evaluation.heldout import HeldoutConfig, evaluate_heldout
from lad.modeling import ModelRef
from lad.tracking import Tracker, TrackingConfig
from lad.train.checkpoint import resume_latest, save_checkpoint
from lad.train.engine import EngineConfig, OptimConfig, build_engine, dist_info
from lad.train.lora import LoraSettings, add_adapters, save_adapted
from lad.train.run_log import RunLogger
from lad.train.sft_data import DataError, SFTData, batch_plan, collate, completion_nll_sum, load_pairs, micro_slice, tokenize_pairs


class SFTTrainConfig(BaseModel):
    """Batching and length of the run."""

    micro_batch_size: int = Field(16, gt=0, description="examples per forward pass on one process")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step on each process")
    epochs: float = Field(1.0, gt=0, description="passes over the data (ignored when max_steps is set)")
    max_steps: Optional[int] = Field(None, gt=0, description="optimizer steps; None: from epochs")
    seed: int = Field(0, description="seeds the model init (tiny models), the batch plan and the RNGs")
    log_every: int = Field(10, gt=0, description="steps between metric logs")


class CheckpointConfig(BaseModel):
    dir: Optional[str] = Field(None, description="checkpoint root; None: <output_dir>/checkpoints")
    every_steps: int = Field(100, gt=0, description="save every N optimizer steps")
    keep_last: int = Field(2, gt=0, description="complete checkpoints kept")


class SFTTracking(TrackingConfig):
    """Where the stage's params and metrics go (lad.tracking; MLflow)."""

    experiment: str = Field("lad-sft", min_length=1, description="MLflow experiment")
    enabled: bool = Field(True, description="log to MLflow")
    run_name: str = Field("sft", description="name of the run (or of the stage under parent_run_id)")
    parent_run_id: Optional[str] = Field(None, description="pipeline run to nest this stage under; None: a run of its own")


class SFTConfig(BaseModel):
    """The whole SFT stage, as read from YAML (see configs/sft/tiny.yaml)."""

    model: ModelRef = Field("tiny:1m", description="a model reference (lad.modeling.load_model): tiny:<preset> (built here), a model directory, a .gguf file, s3:// URI, smollm2-135m-instruct or hf://org/name")
    output_dir: str = Field("out/sft", description="where model/, metrics.json and checkpoints/ go")
    data: SFTData
    train: SFTTrainConfig = SFTTrainConfig()
    optim: OptimConfig = OptimConfig()
    engine: EngineConfig = EngineConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    heldout: HeldoutConfig = HeldoutConfig()
    tracking: SFTTracking = SFTTracking()
    lora: Optional[LoraSettings] = Field(
        None, description="train low-rank adapters (peft LoRA) instead of the model's weights; the output is the merged "
        "model, with the adapters beside it in adapter/. None: full fine-tuning")

    model_config = {"extra": "forbid"}

    def checkpoint_root(self) -> Path:
        return Path(self.checkpoint.dir or Path(self.output_dir) / "checkpoints")

    def trajectory(self) -> dict:
        """The settings that determine the training trajectory; a resume must not change them."""
        return {"model": self.model, "data": self.data.model_dump(), "train": self.train.model_dump(exclude={"log_every"}),
                "optim": self.optim.model_dump(), "engine": self.engine.model_dump(),
                "lora": None if self.lora is None else self.lora.model_dump()}


def load_config(path: str | Path, **overrides) -> SFTConfig:
    """SFTConfig from a YAML file; ``overrides`` replace values (dotted keys reach nested sections)."""
    return load_yaml_config(path, SFTConfig, overrides)


def train_sft(cfg: SFTConfig, *, resume: bool = False, on_step: Optional[Callable[[int], None]] = None) -> dict:
    """Run the SFT stage; returns the final metrics. ``on_step(step)`` is called after every update."""
    from lad.modeling import load_model, save_model

    rank, world, _ = dist_info()
    tc = cfg.train
    torch.manual_seed(tc.seed)
    model, tokenizer = load_model(cfg.model, seed=tc.seed)
    if cfg.lora is not None:
        model = add_adapters(model, cfg.lora)
    pairs = load_pairs(cfg.data)
    examples, dropped = tokenize_pairs(pairs, tokenizer, cfg.data.max_seq_len)
    global_batch = tc.micro_batch_size * tc.grad_accum * world
    lengths = [len(e.input_ids) for e in examples]
    steps_per_epoch = len(batch_plan(lengths, global_batch, seed=tc.seed, epoch=0))
    if steps_per_epoch == 0:
        raise DataError(f"{len(examples)} usable examples ({dropped} over max_seq_len) fill no global batch of {global_batch}")
    total_steps = tc.max_steps or max(1, round(tc.epochs * steps_per_epoch))

    engine = build_engine(model, cfg.optim, cfg.engine, total_steps=total_steps, grad_accum=tc.grad_accum, micro_batch_size=tc.micro_batch_size)
    root = cfg.checkpoint_root()
    step, tokens_seen, run_id = 0, 0, None
    state = resume_latest(engine, root, cfg.trajectory(), total_steps=total_steps) if resume else None
    if state is not None:
        step, tokens_seen, run_id = state["step"], state["tokens_seen"], state.get("mlflow_run_id")

    t = cfg.tracking
    with RunLogger(Tracker(t) if t.enabled else None, cfg.output_dir, name=t.run_name, stage="sft", config=cfg, rank=rank,
                   total=total_steps, initial=step, desc="sft", run_id=run_id, parent_run_id=t.parent_run_id,
                   log_every=tc.log_every, step_log=False) as log:
        if log.fresh and cfg.data.path is not None:
            log.log_dataset(cfg.data.path, name="sft", context="train")
        elif log.fresh:
            log.log_records([{"prompt": p.messages, "response": p.response} for p in pairs], name="sft", context="train",
                            source={"synthetic": cfg.data.synthetic.model_dump()})
        log.set_tags({"sft.examples": len(examples), "sft.dropped_over_max_len": dropped, "sft.global_batch": global_batch,
                      "sft.world_size": world, "sft.total_steps": total_steps})
        plan, plan_epoch = None, -1
        last_loss = float("nan")
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            if epoch != plan_epoch:
                plan, plan_epoch = batch_plan(lengths, global_batch, seed=tc.seed, epoch=epoch), epoch
            batch = plan[index]
            n_tokens = sum(examples[i].n_completion for i in batch)
            t0 = time.perf_counter()
            nll, seen, update = 0.0, 0, None
            for micro in range(tc.grad_accum):
                idx = micro_slice(batch, micro=micro, rank=rank, world_size=world, micro_batch_size=tc.micro_batch_size)
                mb = collate([examples[i] for i in idx], tokenizer.pad_token_id)
                labels = mb.pop("labels").to(engine.device)
                out = engine.forward(**{k: v.to(engine.device) for k, v in mb.items()})
                part = completion_nll_sum(out.logits, labels)
                engine.backward(part / n_tokens)
                update = engine.step()
                nll += float(part.detach())
                seen += int(mb["attention_mask"].sum())
            nll, seen = engine.all_reduce_sum(nll), int(engine.all_reduce_sum(seen))
            step += 1
            tokens_seen += seen
            last_loss = nll / n_tokens
            dt = time.perf_counter() - t0
            lr = engine.lr()
            metrics = {"train/loss": last_loss, "train/lr": lr, "train/tokens_per_s": seen / dt, "train/epoch": step / steps_per_epoch}
            if update and update["grad_norm"] is not None:
                metrics["train/grad_norm"] = update["grad_norm"]
            log.step(step, metrics, postfix={"loss": f"{last_loss:.4f}", "lr": f"{lr:.2e}", "tok_s": f"{seen / dt:.0f}"},
                     last=step == total_steps)
            if step % cfg.checkpoint.every_steps == 0 and step < total_steps:
                trainer_state = {"tokens_seen": tokens_seen, "epoch": epoch, "batch_in_epoch": index + 1,
                                 "trajectory": cfg.trajectory(), "mlflow_run_id": log.run_id}
                save_checkpoint(engine, root, step, trainer_state, keep_last=cfg.checkpoint.keep_last)
            if on_step is not None:
                on_step(step)

        results = {"train/final_loss": last_loss, "train/steps": step, "train/tokens_seen": tokens_seen,
                   "data/examples": len(examples), "data/dropped_over_max_len": dropped}
        with engine.full_model() as full:
            if rank == 0:
                results.update(evaluate_heldout(full, tokenizer, cfg.heldout))
                card = {"base_model": cfg.model, "data": cfg.data.model_dump(), "config": cfg.model_dump(mode="json"), "metrics": results}
                if cfg.lora is not None:
                    save_adapted(full, tokenizer, cfg.output_dir, card)
                else:
                    save_model(full, tokenizer, Path(cfg.output_dir) / "model", card)
                log.write_json("metrics.json", results)
                log.metrics(results, step)
                log.log_dict(results, "sft_metrics.json")
            engine.barrier()
        return results
