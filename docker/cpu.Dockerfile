# mnistbench on the CPU: PyTorch's CPU-only wheels, no CUDA libraries.
# `make image-cpu` builds it and `make bench-cpu` runs specs in it (scripts/image.sh, scripts/bench.sh).
# Every place the build reaches out is a build argument or secret, so building behind a mirror
# or a proxy needs no edit here: docs/containers.md, "Build arguments and secrets".
# Apart from the defaults above FROM, the CUDA image (docker/cuda.Dockerfile) has the same
# steps, so the two install the same versions the same way (tests/test_docker.py checks).

# Any Debian-like image whose `python` is CPython 3.11 or later with the venv module.
ARG BASE_IMAGE=docker.io/library/python:3.11.13-slim-bookworm
# torch and torchvision come from here: PyTorch's CPU-only wheels. Empty: the ordinary index,
# whose Linux wheels bring the CUDA libraries (several GB).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM ${BASE_IMAGE}
# The ordinary index. Empty INDEX_URL: pip's default (https://pypi.org/simple), or the pip_conf
# secret's. EXTRA_INDEX_URLS: separated by commas.
ARG INDEX_URL=
ARG EXTRA_INDEX_URLS=
ARG TORCH_INDEX_URL
# The version pins: a file in the build context, the one `make install` reads.
ARG CONSTRAINTS=constraints.txt

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY docker/pip.sh /usr/local/bin/mnistbench-pip
# The pins, and which file they came from for the run record (mnistbench/environment.py).
COPY ${CONSTRAINTS} /opt/venv/mnistbench-constraints.txt
RUN sum=$(sha256sum < /opt/venv/mnistbench-constraints.txt) \
    && printf '%s sha256:%s\n' "$CONSTRAINTS" "${sum%% *}" > /opt/venv/mnistbench-constraints
# Dependencies before the source, so editing mnistbench/ leaves these layers cached.
RUN --mount=type=secret,id=ca_bundle --mount=type=secret,id=pip_conf \
    mnistbench-pip --torch torch torchvision
COPY pyproject.toml /src/
RUN --mount=type=secret,id=ca_bundle --mount=type=secret,id=pip_conf \
    mnistbench-pip --project-deps /src/pyproject.toml
# --build-arg EXTRAS=ray: Ray for `--executor ray` and the KubeRay and Slurm examples (docs/scale-out.md).
ARG EXTRAS=
COPY docker/requirements-ray.txt /tmp/requirements-ray.txt
RUN --mount=type=secret,id=ca_bundle --mount=type=secret,id=pip_conf \
    if [ "$EXTRAS" = ray ]; then mnistbench-pip --requirement /tmp/requirements-ray.txt; fi
COPY mnistbench/ /src/mnistbench/
# No downloads: the dependencies are in, and setuptools (a torch dependency) builds the package.
# An empty README.md stands in for the long description, so README edits do not change the image.
RUN touch /src/README.md \
    && pip install --no-cache-dir --no-deps --no-build-isolation /src \
    && pip check

# HOME and MPLCONFIGDIR in /tmp: `run --user` gives a uid with no home folder.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
# KubeRay starts Ray through a login shell (bash -l), whose /etc/profile may reset PATH.
# hadolint ignore=SC2016
RUN echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/mnistbench-venv.sh
# The CLI writes ./results/<spec>/ and compares with ./reference/<spec>/; scripts/bench.sh mounts the
# host's results/ (read-write) and reference/ (read-only) here.
WORKDIR /mnistbench
USER 10001
ENTRYPOINT ["mnistbench"]
CMD ["--help"]
