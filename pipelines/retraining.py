"""The retraining pipeline, run on a schedule (``lad pipeline schedule``): new data under an S3
prefix, the registered champion as the starting point, LAD training, challenger and champion
evaluated on the same benchmarks in the same run, registration, and the promotion gate.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Markdown

from lad.kubeflow.components import (
    champion_model, code_execution, compare_evaluations, data_prep, evaluate, lad_train, register_model, training_pod_gpus,
)
from lad.kubeflow.pipelines.k8s import apply_cluster_settings
from lad.kubeflow.pipelines.training import CPU_STEP, DEFAULT_DATASETS, DEFAULT_TOLERATIONS, GATE, GPU_STEP, RL, SANDBOX_SERVICE


class Outputs(NamedTuple):
    challenger_report: HTML
    champion_report: HTML
    decision: Markdown
    registration: str


@dsl.pipeline(name="lad-retraining", description="Scheduled LAD retraining: champion + new data -> challenger, gated promotion.")
def retraining(
    registered_model_name: str = "lad-policy",
    new_data_uri: str = "",
    base_model: str = "tiny:1m",
    datasets: list = DEFAULT_DATASETS,
    objective: str = RL["algorithm.objective"],
    divergence: str = RL["algorithm.loss_params.divergence"],
    kappa: float = RL["algorithm.loss_params.kappa"],
    group_size: int = RL["rollout.n"],
    lr: float = RL["optim.lr"],
    min_lr_ratio: float = RL["optim.min_lr_ratio"],
    mask_truncated: bool = RL["algorithm.mask_truncated"],
    steps: int = RL["train.max_steps"],
    prompts_per_step: int = RL["train.prompts_per_step"],
    mini_batch_size: int = 0,
    micro_batch_size: int = RL["train.micro_batch_size"],
    max_new_tokens: int = RL["rollout.max_new_tokens"],
    rollout_engine: str = RL["rollout.engine"],
    train_engine: str = RL["engine.name"],
    train_eval_prompts: int = 0,
    train_preset: str = "",
    train_overrides: dict = {},
    reward_functions: dict = RL["reward.functions"],
    checkpoint_every: int = RL["checkpoint.every_steps"],
    eval_benchmarks: str = "synthetic_countdown,synthetic_code",
    eval_k: int = 0,
    eval_limit: int = 0,
    eval_max_new_tokens: int = 0,
    eval_temperature: float = -1.0,
    promotion_metric: str = GATE["metric"],
    promotion_margin: float = GATE["margin"],
    promotion_min_score: float = GATE["min_score"],
    sandbox_url: str = SANDBOX_SERVICE,
    benchmarks_dir: str = "",
    mlflow_experiment: str = "lad-retraining",
    seed: int = RL["train.seed"],
    num_nodes: int = 1,
    multinode_job: str = "TrainJob",
    gpus_per_node: int = 1,
    gpu_type: str = "nvidia.com/gpu",
    gpu_node_selector: dict = {},
    gpu_tolerations: list = DEFAULT_TOLERATIONS,
    s3_secret: str = "lad-s3",
    mlflow_secret: str = "lad-mlflow",
    hf_secret: str = "lad-hf",
    image_pull_secret: str = "lad-registry",
    cpu_request: str = CPU_STEP["cpu_request"],
    cpu_limit: str = CPU_STEP["cpu_limit"],
    memory_request: str = CPU_STEP["memory_request"],
    memory_limit: str = CPU_STEP["memory_limit"],
    gpu_cpu_request: str = GPU_STEP["gpu_cpu_request"],
    gpu_cpu_limit: str = GPU_STEP["gpu_cpu_limit"],
    gpu_memory_request: str = GPU_STEP["gpu_memory_request"],
    gpu_memory_limit: str = GPU_STEP["gpu_memory_limit"],
) -> Outputs:
    """Retrain the champion on new data and promote the result only if it beats the champion.

    Args:
        registered_model_name: MLflow registered model whose champion is retrained.
        new_data_uri: new training data, e.g. s3://bucket/lad/incoming/2026-11/ (generic adapter); empty: datasets only.
        base_model: starting model when the registered model has no champion yet.
        datasets: data prep sources besides the new data (held-out eval sets, replay data).
        objective: lad, or a baseline: grpo, dr_grpo, dapo.
        divergence: LAD f-divergence: js, hd, tv, kl, rkl, jf, ps.
        kappa: LAD's 1/eta.
        group_size: G, completions sampled per prompt.
        lr: RL learning rate (the peak, after any warm-up).
        min_lr_ratio: final RL learning rate as a fraction of lr, reached by cosine decay over the steps; 1.0: constant.
        mask_truncated: leave responses cut at max_new_tokens out of the RL loss (DAPO's overlong filtering).
        steps: RL steps.
        prompts_per_step: prompts per RL step.
        mini_batch_size: sequences per optimizer step; 0: all prompts_per_step x group_size (one update per step).
        micro_batch_size: sequences per forward/backward of the RL update.
        max_new_tokens: longest sampled response during training.
        rollout_engine: hf, native (own decode loop) or vllm (GPU).
        train_engine: deepspeed or torch (one process).
        train_eval_prompts: held-out prompts (data prep's eval rows) scored before and after RL; 0: none.
        train_preset: RL settings under the parameters above: a name of configs/train/*.yaml, or a path or s3:// URI
            of an RL config YAML; empty: RLConfig's defaults. A parameter left at its default keeps the preset's value.
        reward_functions: custom rewards for RL: data_source (or "*": every other) -> "module:function" or
            "s3://bucket/file.py:function" (or a path in the image) with verl's compute_score signature; {}: the built-in rewards.
        checkpoint_every: RL steps between checkpoints; with an S3 pipeline root they are published under
            s3://<bucket>/lad-checkpoints/<run id>/<task>, and a retried (pre-empted) training step resumes from the newest.
        train_overrides: any RL setting by its RLConfig name, over the preset and the parameters.
        eval_benchmarks: comma-separated benchmarks both models are evaluated on.
        eval_k: samples per problem; 0: each benchmark's registered k (and RLConfig's eval.k in RL).
        eval_limit: first N problems per benchmark; 0: all.
        eval_max_new_tokens: longest evaluated response; 0: each benchmark's registered budget.
        eval_temperature: sampling temperature of the evaluation; below 0: each benchmark's registered one; 0: greedy
            decoding (then eval_k must be 1).
        promotion_metric: metric the gate compares, e.g. all/avg@k.
        promotion_margin: improvement over the champion needed for promotion; a tie is never promoted.
        promotion_min_score: the floor: a version scoring below it on promotion_metric is registered, never promoted.
        sandbox_url: URL of the sandbox Service that runs code.
        benchmarks_dir: where file-based benchmarks (math500, humanevalplus, ...) are read; empty: the files
            bundled with lad in the images; else an s3:// prefix or a folder mounted into the pods with your own copies.
        mlflow_experiment: MLflow experiment of the pipeline run (one run, a nested run per stage).
        seed: seed of every stage (over a preset's).
        num_nodes: RL training nodes; above 1 runs a multi-node job (multinode_job) launched from a pod without GPUs.
        multinode_job: TrainJob (Kubeflow Trainer v2, its torch-distributed runtime) or PyTorchJob (the training
            operator, for clusters without Trainer v2).
        gpus_per_node: GPUs of each training and evaluation pod.
        gpu_type: accelerator resource name.
        gpu_node_selector: node labels the GPU pods require.
        gpu_tolerations: tolerations of the GPU pods.
        s3_secret: Secret with the S3 credentials.
        mlflow_secret: Secret with MLFLOW_TRACKING_URI and its credentials.
        hf_secret: optional Secret with HF_TOKEN, for gated Hugging Face models (hf://org/name).
        image_pull_secret: the image pull secret of a private registry (skipped when the Secret does not exist).
        cpu_request: CPU request of the CPU steps (champion, data prep, code execution, registration).
        cpu_limit: CPU limit of the CPU steps.
        memory_request: memory request of the CPU steps.
        memory_limit: memory limit of the CPU steps.
        gpu_cpu_request: CPU request of the GPU steps (training, evaluation).
        gpu_cpu_limit: CPU limit of the GPU steps.
        gpu_memory_request: memory request of the GPU steps.
        gpu_memory_limit: memory limit of the GPU steps.
    """
    champ = champion_model(name=registered_model_name, fallback_model=base_model, seed=seed, experiment=mlflow_experiment).set_display_name("champion")
    prep = data_prep(datasets=datasets, extra_train_uri=new_data_uri, seed=seed, experiment=mlflow_experiment).set_display_name("data prep")
    pod_gpus = training_pod_gpus(num_nodes=num_nodes, gpus_per_node=gpus_per_node).set_display_name("training pod GPUs")
    train = lad_train(
        init_model=champ.outputs["model"], data=prep.outputs["data"], objective=objective, divergence=divergence, kappa=kappa,
        group_size=group_size, lr=lr, min_lr_ratio=min_lr_ratio, mask_truncated=mask_truncated, steps=steps,
        prompts_per_step=prompts_per_step, mini_batch_size=mini_batch_size,
        micro_batch_size=micro_batch_size, max_new_tokens=max_new_tokens,
        rollout_engine=rollout_engine, preset=train_preset, overrides=train_overrides, engine=train_engine,
        reward_functions=reward_functions, checkpoint_every=checkpoint_every,
        eval_prompts=train_eval_prompts, eval_k=eval_k,
        sandbox_url=sandbox_url, seed=seed, experiment=mlflow_experiment,
        num_nodes=num_nodes, gpus_per_node=gpus_per_node, gpu_type=gpu_type, node_selector=gpu_node_selector,
        tolerations=gpu_tolerations, s3_secret=s3_secret, mlflow_secret=mlflow_secret, hf_secret=hf_secret,
        multinode_job=multinode_job,
    ).set_display_name("LAD training")
    evals = {}
    for label, model in (("challenger", train.outputs["model"]), ("champion", champ.outputs["model"])):
        evals[label] = evaluate(model=model, benchmarks=eval_benchmarks, k=eval_k, limit=eval_limit,
                                max_new_tokens=eval_max_new_tokens, temperature=eval_temperature, sandbox_url=sandbox_url,
                                benchmarks_dir=benchmarks_dir,
                                label=label, seed=seed, experiment=mlflow_experiment, stage=f"evaluate-{label}").set_display_name(f"evaluate {label}")
    code = code_execution(evaluation=evals["challenger"].outputs["results"], benchmarks=eval_benchmarks, k=eval_k,
                          limit=eval_limit, sandbox_url=sandbox_url, benchmarks_dir=benchmarks_dir, experiment=mlflow_experiment).set_display_name("code execution")
    reg = register_model(model=train.outputs["model"], evaluation=evals["challenger"].outputs["results"],
                         champion_evaluation=evals["champion"].outputs["results"], data=prep.outputs["data"],
                         name=registered_model_name, metric=promotion_metric, margin=promotion_margin,
                         min_score=promotion_min_score, base_model=base_model,
                         experiment=mlflow_experiment).set_display_name("register + gate")
    reg.after(code)
    compared = compare_evaluations(baseline=evals["champion"].outputs["results"], baseline_label="champion",
                                   trained=evals["challenger"].outputs["results"], trained_label="challenger",
                                   experiment=mlflow_experiment).set_display_name("compare")

    gpu_tasks = [train, evals["challenger"], evals["champion"]]
    apply_cluster_settings(
        [champ, prep, pod_gpus, *gpu_tasks, code, reg, compared], gpu=gpu_tasks, sandbox=[*gpu_tasks, code], models=[champ, *gpu_tasks],
        training=[train], training_gpus=pod_gpus.output,
        secrets={"s3": s3_secret, "mlflow": mlflow_secret, "hf": hf_secret},
        placement={"gpu_type": gpu_type, "gpus": gpus_per_node, "node_selector": gpu_node_selector, "tolerations": gpu_tolerations},
        cpu_resources=(cpu_request, cpu_limit, memory_request, memory_limit),
        gpu_resources=(gpu_cpu_request, gpu_cpu_limit, gpu_memory_request, gpu_memory_limit), image_pull_secret=image_pull_secret,
    )
    # The champion and the registry change between runs: never reuse an earlier answer.
    champ.set_caching_options(False)
    reg.set_caching_options(False)
    return Outputs(challenger_report=evals["challenger"].outputs["report"], champion_report=evals["champion"].outputs["report"],
                   decision=reg.outputs["decision"], registration=reg.outputs["Output"])
