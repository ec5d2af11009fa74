"""The training pipeline: data prep -> SFT warm-up (optional) -> LAD RL -> evaluate the trained
model and the warm start on the same problems (code answers executed in the sandbox) -> one
side-by-side report -> register in MLflow with the promotion gate. With ``compare_objective`` set,
a baseline objective (e.g. GRPO) is trained from the same warm start and joins the report.

A stage setting's default is its typed config's (lad.pipeline.settings: RLConfig, SFTConfig, the
benchmark registry; 0 where that is None or the benchmark's own); the RL stage also takes a preset
(train_preset) and any setting by name (train_overrides). ``lad pipeline run --local`` runs the demo
configuration on one machine (lad/pipeline/local.py); on a cluster, set them in the Kubeflow UI.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Markdown

from lad.kubeflow.components import (
    code_execution, compare_evaluations, data_prep, evaluate, lad_train, register_model, sft_warmup, training_pod_gpus,
)
from lad.kubeflow.pipelines.k8s import apply_cluster_settings
from lad.pipeline.settings import typed_defaults

RL, SFT, GATE = typed_defaults("rl"), typed_defaults("sft"), typed_defaults("gate")

# Synthetic countdown problems: RL prompts and a held-out split (no files needed anywhere).
DEFAULT_DATASETS = [
    {"name": "synthetic/countdown", "role": "train", "synthetic": {"task": "countdown", "n": 2000, "seed": 0}, "decontaminate": False},
    {"name": "synthetic/countdown-test", "data_source": "synthetic/countdown", "role": "eval",
     "synthetic": {"task": "countdown", "n": 64, "seed": 1}},
]
DEFAULT_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
# The Service of images/sandbox/sandbox.yaml, deployed in the namespace the pipeline runs in.
SANDBOX_SERVICE = "http://lad-sandbox"
# CPU and memory (request, limit) of the CPU steps (data prep, code execution, compare, registration) and of the
# GPU steps (SFT, RL, evaluation: tokenization, rollout buffers, DeepSpeed's host-side optimizer state).
CPU_STEP = {"cpu_request": "1", "cpu_limit": "4", "memory_request": "4Gi", "memory_limit": "16Gi"}
GPU_STEP = {"gpu_cpu_request": "8", "gpu_cpu_limit": "32", "gpu_memory_request": "64Gi", "gpu_memory_limit": "256Gi"}


class Outputs(NamedTuple):
    # The side-by-side report's folder (compare.html/.md/.json, plots/); its HTML is the compare step's output.
    # A URI, not the HTML artifact: KFP's local runner selects between branches' parameters only.
    comparison: str
    decision: Markdown
    registration: str


@dsl.pipeline(name="lad-training", description="LAD post-training: data prep, SFT warm-up, LAD RL, evaluation, registration.")
def training(
    base_model: str = "tiny:1m",
    datasets: list = DEFAULT_DATASETS,
    sft_steps: int = 0,
    sft_data: str = "synthetic:" + ",".join(SFT["data.synthetic.tasks"]),
    sft_lr: float = SFT["optim.lr"],
    sft_batch_size: int = SFT["train.micro_batch_size"],
    sft_problems: int = 0,
    sft_heldout_problems: int = SFT["heldout.n_per_task"],
    objective: str = RL["algorithm.objective"],
    compare_objective: str = "",
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
    registered_model_name: str = "lad-policy",
    promotion_metric: str = GATE["metric"],
    promotion_margin: float = GATE["margin"],
    promotion_min_score: float = GATE["min_score"],
    sandbox_url: str = SANDBOX_SERVICE,
    benchmarks_dir: str = "",
    mlflow_experiment: str = "lad-pipeline",
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
    """Train with LAD and register the result.

    Args:
        base_model: starting model: tiny:1m, smollm2-135m-instruct (packaged), a .gguf file, s3:// URI of a Hugging Face
            folder or .gguf file, or hf://org/name.
        datasets: data prep sources (lad/data/config.py SourceConfig): files, s3:// URIs, synthetic tasks; role train or eval.
        sft_steps: SFT warm-up steps; 0 skips the warm-up.
        sft_data: synthetic:<task>,... or an s3:// parquet/JSONL of records with responses.
        sft_lr: SFT peak learning rate.
        sft_batch_size: demonstrations per SFT step.
        sft_problems: distinct synthetic problems per task the SFT demonstrations repeat; 0: steps x batch size.
        sft_heldout_problems: held-out synthetic problems per task decoded after SFT (0: none).
        objective: lad, or a baseline: grpo, dr_grpo, dapo.
        compare_objective: empty, or a second objective (e.g. grpo) trained from the same warm start with the same
            settings and evaluated beside it in the report (it is not registered).
        divergence: LAD f-divergence: js, hd, tv, kl, rkl, jf, ps.
        kappa: LAD's 1/eta (paper: 4 for math).
        group_size: G, completions sampled per prompt.
        lr: RL learning rate (the peak, after any warm-up).
        min_lr_ratio: final RL learning rate as a fraction of lr, reached by cosine decay over the steps; 1.0: constant.
        mask_truncated: leave responses cut at max_new_tokens out of the RL loss (DAPO's overlong filtering).
        steps: RL steps (rollout + update each).
        prompts_per_step: prompts per RL step.
        mini_batch_size: sequences per optimizer step; 0: all prompts_per_step x group_size (one update per step).
        micro_batch_size: sequences per forward/backward of the RL update.
        max_new_tokens: longest sampled response during training.
        rollout_engine: hf, native (own decode loop) or vllm (GPU).
        train_engine: deepspeed or torch (one process).
        train_eval_prompts: held-out prompts (data prep's eval rows) scored before and after RL; 0: none.
        train_preset: RL settings under the parameters above: a name of configs/train/*.yaml (e.g. paper_math), or a
            path or s3:// URI of an RL config YAML; empty: RLConfig's defaults. A parameter left at its default keeps
            the preset's value.
        reward_functions: custom rewards for RL: data_source (or "*": every other) -> "module:function" or
            "s3://bucket/file.py:function" (or a path in the image) with verl's compute_score signature; {}: the built-in rewards.
        checkpoint_every: RL steps between checkpoints; with an S3 pipeline root they are published under
            s3://<bucket>/lad-checkpoints/<run id>/<task>, and a retried (pre-empted) training step resumes from the newest.
        train_overrides: any RL setting by its RLConfig name, over the preset and the parameters, e.g.
            {"algorithm.kl_coef": 0.01, "algorithm.advantage": "rloo", "algorithm.loss_params.clip_high": 0.28}.
        eval_benchmarks: comma-separated benchmarks (lad eval list), e.g. math500,aime24,humanevalplus.
        eval_k: samples per problem (Avg@k, Pass@k); 0: each benchmark's registered k (and RLConfig's eval.k in RL).
        eval_limit: first N problems per benchmark; 0: all.
        eval_max_new_tokens: longest evaluated response; 0: each benchmark's registered budget.
        eval_temperature: sampling temperature of the evaluation; below 0: each benchmark's registered one (0.6, as
            the paper's; 1.0 samples as RL does); 0: greedy decoding (then eval_k must be 1).
        registered_model_name: MLflow registered model that receives the version.
        promotion_metric: metric the gate compares, e.g. all/avg@k, math/pass@k, aime24/avg@k.
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
        gpus_per_node: GPUs of each training, SFT and evaluation pod.
        gpu_type: accelerator resource name.
        gpu_node_selector: node labels the GPU pods require, e.g. {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}.
        gpu_tolerations: tolerations of the GPU pods.
        s3_secret: Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and optional AWS_ENDPOINT_URL).
        mlflow_secret: Secret with MLFLOW_TRACKING_URI (and optional MLFLOW_TRACKING_USERNAME/PASSWORD/TOKEN).
        hf_secret: optional Secret with HF_TOKEN, for gated Hugging Face models (hf://org/name).
        image_pull_secret: the image pull secret of a private registry (skipped when the Secret does not exist).
        cpu_request: CPU request of the CPU steps (data prep, code execution, compare, registration).
        cpu_limit: CPU limit of the CPU steps.
        memory_request: memory request of the CPU steps.
        memory_limit: memory limit of the CPU steps.
        gpu_cpu_request: CPU request of the GPU steps (SFT, training, evaluation).
        gpu_cpu_limit: CPU limit of the GPU steps.
        gpu_memory_request: memory request of the GPU steps.
        gpu_memory_limit: memory limit of the GPU steps.
    """
    prep = data_prep(datasets=datasets, seed=seed, experiment=mlflow_experiment).set_display_name("data prep")
    sft = sft_warmup(base_model=base_model, steps=sft_steps, data=sft_data, lr=sft_lr, micro_batch_size=sft_batch_size,
                     problems=sft_problems, heldout_problems=sft_heldout_problems, engine=train_engine, seed=seed,
                     experiment=mlflow_experiment).set_display_name("SFT warm-up")
    common = dict(data=prep.outputs["data"], divergence=divergence, kappa=kappa, group_size=group_size, lr=lr,
                  min_lr_ratio=min_lr_ratio, mask_truncated=mask_truncated, steps=steps,
                  prompts_per_step=prompts_per_step, mini_batch_size=mini_batch_size, micro_batch_size=micro_batch_size,
                  max_new_tokens=max_new_tokens, rollout_engine=rollout_engine, preset=train_preset, overrides=train_overrides,
                  reward_functions=reward_functions, checkpoint_every=checkpoint_every,
                  engine=train_engine, eval_prompts=train_eval_prompts, eval_k=eval_k, sandbox_url=sandbox_url, seed=seed,
                  experiment=mlflow_experiment, num_nodes=num_nodes, gpus_per_node=gpus_per_node, gpu_type=gpu_type,
                  node_selector=gpu_node_selector, tolerations=gpu_tolerations, s3_secret=s3_secret,
                  mlflow_secret=mlflow_secret, hf_secret=hf_secret, multinode_job=multinode_job)
    scoring = dict(benchmarks=eval_benchmarks, k=eval_k, limit=eval_limit, max_new_tokens=eval_max_new_tokens,
                   temperature=eval_temperature,
                   sandbox_url=sandbox_url, benchmarks_dir=benchmarks_dir, seed=seed, experiment=mlflow_experiment)
    pod_gpus = training_pod_gpus(num_nodes=num_nodes, gpus_per_node=gpus_per_node).set_display_name("training pod GPUs")
    train = lad_train(init_model=sft.outputs["model"], objective=objective, **common).set_display_name("LAD training")
    ev = evaluate(model=train.outputs["model"], label=objective, **scoring).set_display_name("evaluate")
    warm = evaluate(model=sft.outputs["model"], label="warm start", stage="evaluate-warm-start",
                    **scoring).set_display_name("evaluate warm start")
    code = code_execution(evaluation=ev.outputs["results"], benchmarks=eval_benchmarks, k=eval_k, limit=eval_limit,
                          sandbox_url=sandbox_url, benchmarks_dir=benchmarks_dir, experiment=mlflow_experiment,
                          ).set_display_name("code execution")
    reg = register_model(model=train.outputs["model"], evaluation=ev.outputs["results"], data=prep.outputs["data"],
                         baseline_evaluation=warm.outputs["results"], name=registered_model_name, metric=promotion_metric,
                         margin=promotion_margin, min_score=promotion_min_score, base_model=base_model,
                         experiment=mlflow_experiment).set_display_name("register")
    reg.after(code)  # a model whose code answers the sandbox cannot run is not registered
    tasks = [prep, sft, pod_gpus, train, ev, warm, code, reg]
    gpu_tasks, sandbox_tasks = [sft, train, ev, warm], [train, ev, warm, code]

    with dsl.If(compare_objective != "", name="compare-objective"):
        alt = lad_train(init_model=sft.outputs["model"], objective=compare_objective, stage="train-compare",
                        **common).set_display_name("baseline training")
        alt_ev = evaluate(model=alt.outputs["model"], label=compare_objective, stage="evaluate-compare",
                          **scoring).set_display_name("evaluate baseline")
        three = compare_evaluations(baseline=warm.outputs["results"], trained=ev.outputs["results"], trained_label=objective,
                                    other=alt_ev.outputs["results"], other_label=compare_objective,
                                    experiment=mlflow_experiment).set_display_name("compare")
    with dsl.Else(name="no-compare-objective"):
        two = compare_evaluations(baseline=warm.outputs["results"], trained=ev.outputs["results"], trained_label=objective,
                                  experiment=mlflow_experiment).set_display_name("compare")
    tasks += [alt, alt_ev, three, two]
    gpu_tasks += [alt, alt_ev]
    sandbox_tasks += [alt, alt_ev]

    apply_cluster_settings(
        tasks, gpu=gpu_tasks, sandbox=sandbox_tasks, models=gpu_tasks, training=[train, alt], training_gpus=pod_gpus.output,
        secrets={"s3": s3_secret, "mlflow": mlflow_secret, "hf": hf_secret},
        placement={"gpu_type": gpu_type, "gpus": gpus_per_node, "node_selector": gpu_node_selector, "tolerations": gpu_tolerations},
        cpu_resources=(cpu_request, cpu_limit, memory_request, memory_limit),
        gpu_resources=(gpu_cpu_request, gpu_cpu_limit, gpu_memory_request, gpu_memory_limit), image_pull_secret=image_pull_secret,
    )
    reg.set_caching_options(False)  # registration changes the registry: never reuse an earlier result
    return Outputs(comparison=dsl.OneOf(three.outputs["Output"], two.outputs["Output"]), decision=reg.outputs["decision"],
                   registration=reg.outputs["Output"])
