# Sourced by scripts/test: a Docker Engine and the Canopy images for the container tests
# (tests/compat/test_testcontainers.py). Defines:
#
#   docker_up      use the Docker daemon that answers, else install docker.io (apt-get, as root)
#                  and start a private dockerd (own socket, --iptables=false); exports DOCKER_HOST
#   images_up      build canopy:test and canopy-services:test from this checkout unless images
#                  built from the same sources exist (deploy/build-image.sh; a Debian base made
#                  with debootstrap when python:3.11-slim is not available locally); exports
#                  CANOPY_IMAGE, CANOPY_SERVICES_IMAGE
#   docker_down    stop the dockerd that docker_up started (nothing else)
#
# Images persist between runs in ${XDG_CACHE_HOME:-~/.cache}/canopy/docker.

CANOPY_DOCKERD_PID=""
CANOPY_DOCKER_RUN=""

docker_up() {
  if docker info >/dev/null 2>&1; then
    say "using the running Docker daemon (${DOCKER_HOST:-default socket})"
    return 0
  fi
  if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]]; then
      say "FAILED: no Docker daemon answers and dockerd is not installed; install Docker" \
        "(Debian: apt-get install docker.io debootstrap) or start your daemon"
      return 1
    fi
    say "installing docker.io and debootstrap (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
  fi
  CANOPY_DOCKER_RUN="$(mktemp -d "${TMPDIR:-/tmp}/canopy-docker.XXXXXX")"
  local root="${XDG_CACHE_HOME:-$HOME/.cache}/canopy/docker"
  mkdir -p "$root"
  say "starting dockerd (socket $CANOPY_DOCKER_RUN/docker.sock, data $root)"
  dockerd --iptables=false --ip6tables=false \
    --host "unix://$CANOPY_DOCKER_RUN/docker.sock" --data-root "$root" \
    --exec-root "$CANOPY_DOCKER_RUN/exec" --pidfile "$CANOPY_DOCKER_RUN/docker.pid" \
    >"$CANOPY_DOCKER_RUN/dockerd.log" 2>&1 &
  CANOPY_DOCKERD_PID=$!
  export DOCKER_HOST="unix://$CANOPY_DOCKER_RUN/docker.sock"
  local _
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return 0
    kill -0 "$CANOPY_DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  say "FAILED: dockerd did not come up; its log:"
  tail -n 20 "$CANOPY_DOCKER_RUN/dockerd.log" >&2
  return 1
}

# A digest of everything the image is built from: the tracked files, plus uncommitted edits.
source_digest() {
  { git ls-files -z -- . ':!tests' ':!bench' | xargs -0 sha256sum; } 2>/dev/null \
    | sha256sum | cut -c1-16
}

images_up() {
  export CANOPY_IMAGE="canopy:test" CANOPY_SERVICES_IMAGE="canopy-services:test"
  export TESTCONTAINERS_RYUK_DISABLED="${TESTCONTAINERS_RYUK_DISABLED:-true}"
  local digest have
  digest="$(source_digest)"
  have="$(docker image inspect "$CANOPY_SERVICES_IMAGE" \
    --format '{{ index .Config.Labels "org.canopy.source" }}' 2>/dev/null || true)"
  if [[ -n "$digest" && "$have" == "$digest" ]] \
    && docker image inspect "$CANOPY_IMAGE" >/dev/null 2>&1; then
    say "images $CANOPY_IMAGE and $CANOPY_SERVICES_IMAGE are up to date ($digest)"
    return 0
  fi
  local base=(--local-base)
  if docker image inspect python:3.11-slim >/dev/null 2>&1; then base=(); fi
  say "building $CANOPY_IMAGE and $CANOPY_SERVICES_IMAGE (deploy/build-image.sh ${base[*]})"
  PYTHON="$PYTHON" bash deploy/build-image.sh "${base[@]}" --services --tag "$CANOPY_IMAGE" \
    --label "org.canopy.source=$digest"
}

docker_down() {
  [[ -n "$CANOPY_DOCKERD_PID" ]] || return 0
  say "stopping dockerd (pid $CANOPY_DOCKERD_PID)"
  kill -TERM "$CANOPY_DOCKERD_PID" 2>/dev/null || true
  local _
  for _ in $(seq 60); do
    kill -0 "$CANOPY_DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -KILL "$CANOPY_DOCKERD_PID" 2>/dev/null || true
  wait "$CANOPY_DOCKERD_PID" 2>/dev/null || true
  CANOPY_DOCKERD_PID=""
  # dockerd leaves its network namespace mounted under the exec root
  local mnt
  for mnt in "$CANOPY_DOCKER_RUN"/exec/netns/*; do
    [[ -e "$mnt" ]] && umount "$mnt" 2>/dev/null || true
  done
  rm -rf "$CANOPY_DOCKER_RUN" 2>/dev/null || say "left $CANOPY_DOCKER_RUN behind (busy mounts)"
}
