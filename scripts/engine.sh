# shellcheck shell=bash
# The container engine and the images, for scripts/bench.sh and scripts/image.sh (sourced, not run).
# Environment:
#   ENGINE=docker|podman   the engine's command (default: docker when `docker info` answers, else podman)
#   CONSTRAINTS            the version pins the images install (default constraints.txt, as `make install`)
#   BUILD_FLAGS            extra flags for the engine's build: --build-arg, --secret, --network... (split at spaces)
#   RUN_FLAGS              extra flags for the engine's run (split at spaces)
#   CDI_SPEC_DIRS          where podman's GPU (CDI) specs are looked for (default /etc/cdi /var/run/cdi)
# Run from the repository root.

CONSTRAINTS=${CONSTRAINTS-constraints.txt}
engine_kind= # docker or podman, once engine_find succeeds
engine_info=

err() { echo "mnistbench: error: $*" >&2; }

# last_lines FILE N [PATTERN]: the file's last N non-blank lines (that match PATTERN, when some do) on one
# line, joined by " | ".
last_lines() {
  tr -d '\r' <"$1" | awk -v n="$2" -v pattern="${3:-.}" '
    NF { sub(/^[[:space:]]+/, ""); line[++k] = $0; if ($0 ~ pattern) hit[++h] = $0 }
    END {
      if (h) { k = h; for (i = 1; i <= h; i++) line[i] = hit[i] }
      if (!k) printf "no output"
      for (i = (k > n ? k - n + 1 : 1); i <= k; i++) printf "%s%s", line[i], (i < k ? " | " : "")
    }'
}

# engine_find: the first engine whose `info` answers, in ENGINE, engine_kind and engine_info; 1 when none does.
engine_find() {
  local candidates=(docker podman) e
  if [ -n "${ENGINE:-}" ]; then candidates=("$ENGINE"); fi
  for e in "${candidates[@]}"; do
    command -v "$e" >/dev/null 2>&1 || continue
    if engine_info=$("$e" info 2>/dev/null); then
      ENGINE=$e
      # podman-docker's `docker` is podman too.
      case $("$e" --version 2>/dev/null) in *[Pp]odman*) engine_kind=podman ;; *) engine_kind=docker ;; esac
      return 0
    fi
  done
  return 1
}

# What engine_find tried, for messages: "docker info and podman info failed".
engine_tried() {
  if [ -n "${ENGINE:-}" ]; then echo "$ENGINE info failed"; else echo "docker info and podman info failed"; fi
}

# engine_gpu_ready: whether the engine can give a container the host's NVIDIA GPUs.
# Docker: the NVIDIA runtime is registered (`docker info`, Runtimes:). Podman: a CDI spec names nvidia.com/gpu.
engine_gpu_ready() {
  if [ "$engine_kind" = docker ]; then
    grep -qiE '^[[:space:]]*Runtimes:.*nvidia' <<<"$engine_info"
    return
  fi
  local dir
  for dir in ${CDI_SPEC_DIRS:-/etc/cdi /var/run/cdi}; do
    if grep -qs 'nvidia\.com/gpu' "$dir"/*.yaml "$dir"/*.yml "$dir"/*.json 2>/dev/null; then return 0; fi
  done
  return 1
}

# The flags that hand a container all GPUs: Docker's --gpus, podman's CDI device.
engine_gpu_flags() {
  if [ "$engine_kind" = docker ]; then echo "--gpus all"; else echo "--device nvidia.com/gpu=all"; fi
}

# engine_user_flags: run as the caller, so that what the container writes belongs to them. A rootless
# engine maps the caller to root in the container (Docker), or keeps the caller's id (podman's keep-id).
engine_user_flags() {
  local ids
  ids="$(id -u):$(id -g)"
  if [ "$engine_kind" = podman ] && grep -qiE '^[[:space:]]*rootless:[[:space:]]*true' <<<"$engine_info"; then
    echo "--userns=keep-id --user $ids"
  elif [ "$engine_kind" = docker ] && grep -qiE '^[[:space:]]*rootless$' <<<"$engine_info"; then
    echo "--user 0:0"
  else
    echo "--user $ids"
  fi
}

# sha256 < FILE: the hex digest.
sha256() {
  local sum
  if command -v sha256sum >/dev/null 2>&1; then sum=$(sha256sum); else sum=$(shasum -a 256); fi
  echo "${sum%% *}"
}

flavour_of() { case $1 in gpu | cuda) echo cuda ;; *) echo cpu ;; esac; }

# image_inputs FLAVOUR: the files the image is built from (what the Dockerfile copies), one a line.
image_inputs() {
  { printf '%s\n' "docker/$1.Dockerfile" docker/pip.sh "$CONSTRAINTS" pyproject.toml
    find mnistbench -type f ! -name '*.py[co]' ! -path '*/__pycache__/*'
  } | LC_ALL=C sort
}

# image_tag FLAVOUR: mnistbench-FLAVOUR:VERSION-HASH, HASH from the inputs' contents, the constraints
# file's name and BUILD_FLAGS. The same inputs give the same tag, so an image is built once.
image_tag() {
  local flavour=$1 version hash
  if [ -z "$CONSTRAINTS" ] || [ ! -f "$CONSTRAINTS" ]; then
    err "the images need a constraints file, and CONSTRAINTS='$CONSTRAINTS' names none"
    return 2
  fi
  version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' mnistbench/__init__.py)
  hash=$({
    printf 'constraints=%s\nbuild-flags=%s\n' "$CONSTRAINTS" "${BUILD_FLAGS:-}"
    image_inputs "$flavour" | while IFS= read -r file; do echo "$(sha256 <"$file") $file"; done
  } | sha256 | cut -c1-12)
  echo "mnistbench-$flavour:$version-$hash"
}

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# image_id TAG: the image's ID as sha256:HEX (podman prints the hex alone).
image_id() {
  local id
  id=$("$ENGINE" image inspect --format '{{.Id}}' "$1") || return 1
  case $id in sha256:*) echo "$id" ;; *) echo "sha256:$id" ;; esac
}

# image_build FLAVOUR TAG: build from the repository root; the engine's output goes to build/image-FLAVOUR.log
# (and to the terminal when stderr is one). A failure is one line with the log's last error lines.
image_build() {
  local flavour=$1 tag=$2 log status=0
  log=build/image-$flavour.log
  mkdir -p build
  echo "mnistbench: building $tag with $ENGINE (log: $log)" >&2
  local flags=()
  read -r -a flags <<<"${BUILD_FLAGS:-}" # split at spaces
  local cmd=("$ENGINE" build -f "docker/$flavour.Dockerfile" -t "$tag" --build-arg "CONSTRAINTS=$CONSTRAINTS" ${flags[@]+"${flags[@]}"} .)
  if [ -t 2 ]; then
    "${cmd[@]}" 2>&1 | tee "$log" >&2 || status=${PIPESTATUS[0]}
  else
    "${cmd[@]}" >"$log" 2>&1 || status=$?
  fi
  if [ "$status" -ne 0 ]; then
    err "building $tag with $ENGINE failed (exit $status): $(last_lines "$log" 3 '[Ee][Rr][Rr][Oo][Rr]'); full log: $log"
    return 1
  fi
}
