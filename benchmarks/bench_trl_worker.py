"""TRL's side of bench_trl.py: GRPOTrainer on the tiny model, run in a separate virtualenv that
has trl==1.16.0 (it imports nothing from lad). Writes per-step wall times, and the part of each
spent in transformers' generate, to --out as JSON."""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts-file", required=True, help="JSON list of chat prompts (lists of messages)")
    parser.add_argument("--prompts-per-step", type=int, required=True)
    parser.add_argument("--group", type=int, required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, GenerationMixin, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    # Time spent in generate, whichever wrapper of the model TRL calls it on.
    generate_s = [0.0]
    plain_generate = GenerationMixin.generate

    def timed_generate(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return plain_generate(self, *a, **k)
        finally:
            generate_s[0] += time.perf_counter() - t0

    GenerationMixin.generate = timed_generate

    prompts = json.load(open(args.prompts_file))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.model)
    tokenizer.padding_side = "left"

    def reward(completions, **kwargs):
        # Negligible cost, so the timing is generation + update; both sides train on the same tokens.
        return [float(c[0]["content"].count("+") % 2) for c in completions]

    batch = args.prompts_per_step * args.group
    config = GRPOConfig(
        output_dir=args.workdir, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        per_device_train_batch_size=batch, gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1,
        num_generations=args.group, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        # fixed-length completions: EOS is never chosen, every completion has max_new_tokens tokens
        generation_kwargs={"min_new_tokens": args.max_new_tokens},
        beta=0.0, loss_type="grpo", learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0, max_steps=args.steps, logging_steps=1,
        save_strategy="no", report_to="none", seed=args.seed, disable_tqdm=True, dataloader_num_workers=0,
    )

    class Clock(TrainerCallback):
        def __init__(self):
            self.times, self.generate, self.t0 = [], [], None

        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()
            generate_s[0] = 0.0

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self.t0)
            self.generate.append(generate_s[0])

    clock = Clock()
    data = Dataset.from_list([{"prompt": p} for p in prompts])
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=config, train_dataset=data, processing_class=tokenizer,
                          callbacks=[clock])
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    json.dump({"step_s": clock.times, "generate_s": clock.generate, "mean_completion_length": lengths, "tokens_per_step": batch * args.max_new_tokens,
               "torch_threads": torch.get_num_threads()}, open(args.out, "w"))


if __name__ == "__main__":
    main()
