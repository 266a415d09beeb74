# syntax=docker/dockerfile:1
# mnistbench on an NVIDIA GPU: PyTorch's CUDA 12.6 wheels, which bring their own CUDA
# libraries; the host needs only the NVIDIA driver and the NVIDIA Container Toolkit.
# Built by `make bench-gpu` (scripts/bench.sh) from the repository root:
#   docker build -f docker/cuda.Dockerfile -t mnistbench-cuda:0.1.0 .

# uv fetches a standalone CPython, so the Ubuntu base needs no apt packages.
FROM ghcr.io/astral-sh/uv:0.8.22 AS uv

FROM nvidia/cuda:12.6.3-base-ubuntu22.04 AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN uv python install 3.11.13 && uv venv --seed --python 3.11.13 /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies before the source, so editing the code does not download PyTorch again.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu126 \
        torch==2.9.1 torchvision==0.24.1
COPY docker/requirements.txt docker/requirements-ray.txt /tmp/
RUN pip install --no-cache-dir --requirement /tmp/requirements.txt
# --build-arg EXTRAS=ray: Ray for `--engine ray`, the KubeRay and Slurm examples (docs/scale-out.md).
ARG EXTRAS=""
RUN if [ "$EXTRAS" = ray ]; then pip install --no-cache-dir --requirement /tmp/requirements-ray.txt; fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY mnistbench/ mnistbench/
RUN pip install --no-cache-dir --no-deps . && pip check

FROM nvidia/cuda:12.6.3-base-ubuntu22.04
COPY --from=builder /opt/python /opt/python
COPY --from=builder /opt/venv /opt/venv
# HOME and MPLCONFIGDIR in /tmp: `docker run --user` gives a uid with no home folder.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
# KubeRay starts Ray through a login shell (bash -l), whose /etc/profile may reset PATH.
# hadolint ignore=SC2016
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/mnistbench-venv.sh
# The CLI writes ./results/<spec>/; scripts/bench.sh mounts the host's results/ here.
WORKDIR /mnistbench
USER 10001
# Last, so a new commit only rebuilds this layer; read by mnistbench/environment.py.
ARG GIT_COMMIT=unknown
ENV MNISTBENCH_GIT_COMMIT=$GIT_COMMIT
ENTRYPOINT ["mnistbench"]
CMD ["--help"]
