#!/bin/sh
# `pip install` for the image builds (docker/*.Dockerfile), with what the build was given:
#   - the pins in /opt/venv/mnistbench-constraints.txt (a copy of the CONSTRAINTS build argument's file);
#   - the build arguments INDEX_URL (else pip's default, PyPI, or the pip_conf secret's index),
#     EXTRA_INDEX_URLS (separated by commas or spaces) and TORCH_INDEX_URL;
#   - the build secrets ca_bundle (PIP_CERT) and pip_conf (PIP_CONFIG_FILE), when given. A secret is
#     mounted for the one RUN that uses it and is never written to a layer.
# Usage: pip.sh ARGS...            pip install ARGS from the ordinary index
#        pip.sh --torch PACKAGES   PACKAGES (torch, torchvision) from TORCH_INDEX_URL when it is set,
#                                  then their dependencies from the ordinary index
#        pip.sh --project-deps PYPROJECT   the [project] dependencies that PYPROJECT names
set -eu
secrets=${MNISTBENCH_SECRETS_DIR:-/run/secrets} # where RUN --mount=type=secret puts them (tests change it)
if [ -f "$secrets/pip_conf" ]; then export PIP_CONFIG_FILE="$secrets/pip_conf"; fi
if [ -f "$secrets/ca_bundle" ]; then export PIP_CERT="$secrets/ca_bundle"; fi
pins=${MNISTBENCH_PINS:-/opt/venv/mnistbench-constraints.txt}

ordinary() { # pip install "$@" from the ordinary index
  set -- --no-cache-dir --constraint "$pins" "$@"
  if [ -n "${INDEX_URL:-}" ]; then set -- --index-url "$INDEX_URL" "$@"; fi
  for url in $(echo "${EXTRA_INDEX_URLS:-}" | tr ',' ' '); do set -- --extra-index-url "$url" "$@"; done
  pip install "$@"
}

case ${1:-} in
  --torch)
    shift
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
      pip install --no-cache-dir --constraint "$pins" --index-url "$TORCH_INDEX_URL" --no-deps "$@"
    fi
    # What is installed stays (a +cpu build satisfies torch==x.y.z); pip adds its dependencies.
    ordinary "$@"
    ;;
  --project-deps)
    deps=$(python -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' "$2")
    set -f # one requirement a line, no globbing
    IFS='
'
    # shellcheck disable=SC2086 # split into lines on purpose
    set -- $deps
    unset IFS
    set +f
    ordinary "$@"
    ;;
  *) ordinary "$@" ;;
esac
