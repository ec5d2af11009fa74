# The lad package on a slim Python base: the CPU image for data prep, registration and the
# command line. GPU images (trainer with CUDA, DeepSpeed, vLLM) live under images/.
FROM python:3.11-slim

# Point at a CPU-only wheel index for a small image; empty takes torch from the default index.
ARG TORCH_INDEX_URL=""

WORKDIR /opt/lad
COPY constraints/ constraints/
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" -c constraints/cpu.txt torch; \
    else \
        pip install --no-cache-dir -c constraints/cpu.txt torch; \
    fi
COPY pyproject.toml README.md ./
COPY lad/ lad/
# The Kubeflow layer installs as lad.kubeflow.components and lad.kubeflow.pipelines, the presets as lad/configs.
COPY components/ components/
COPY pipelines/*.py pipelines/
COPY configs/ configs/
# The bundled benchmark files install as package data; the check fails the build if any is missing.
RUN pip install --no-cache-dir -c constraints/cpu.txt . \
    && python -c "from lad.data.public import locate, manifest; [locate(name) for name in manifest()]" \
    && useradd --create-home --uid 1000 lad
USER lad
ENTRYPOINT ["lad"]
CMD ["--help"]
