#!/usr/bin/env bash
# Build the Canopy container image (deploy/Dockerfile) from this checkout.
#
#   bash deploy/build-image.sh [--local-base] [--base-image IMAGE] [--tag TAG]... [--services]
#                              [--label KEY=VALUE]...
#
# 1. builds Canopy and every dependency as wheels on the host (pip wheel; pip's cache makes
#    repeated builds fast), into a temporary build context;
# 2. with --local-base, builds a Debian base image without any image registry
#    (deploy/build-base-image.sh, needs root + debootstrap); otherwise the base is --base-image
#    (default python:3.11-slim, pulled by Docker as usual);
# 3. docker build with no network: the image installs only those wheels.
# Tags: canopy:<version> and canopy:latest unless --tag is given (repeatable). --services also
# builds the same image plus the etcd and SeaweedFS binaries, tagged NAME-services:TAG for each
# tag (canopy-services:latest...), which integration.testcontainers.CanopyCluster runs them from.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON="${PYTHON:-python3}"
BASE_IMAGE="python:3.11-slim"
LOCAL_BASE=0
SERVICES=0
TAGS=()
LABELS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --local-base) LOCAL_BASE=1; shift ;;
    --base-image) BASE_IMAGE="$2"; shift 2 ;;
    --tag) TAGS+=("$2"); shift 2 ;;
    --services) SERVICES=1; shift ;;
    --label) LABELS+=(--label "$2"); shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-image: %s\n' "$*" >&2; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-default})"
VERSION="$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
[[ ${#TAGS[@]} -gt 0 ]] || TAGS=("canopy:$VERSION" "canopy:latest")

if [[ "$LOCAL_BASE" == 1 ]]; then
  BASE_IMAGE="$(bash deploy/build-base-image.sh)"
fi

CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/canopy-image.XXXXXX")"
trap 'rm -rf "$CONTEXT"' EXIT
say "building wheels of canopy $VERSION and its dependencies"
target="."
[[ "$SERVICES" == 0 ]] || target=".[services]"
if ! "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$CONTEXT/wheels" \
  "$target" >"$CONTEXT/wheels.log" 2>&1; then
  cat "$CONTEXT/wheels.log" >&2
  die "pip wheel failed"
fi
cp deploy/Dockerfile "$CONTEXT/Dockerfile"

build() {  # build EXTRAS TAG...
  local extras="$1" tag_args=() tag
  shift
  for tag in "$@"; do tag_args+=(--tag "$tag"); done
  say "docker build (FROM $BASE_IMAGE${extras:+, extras $extras}) -> $*"
  # the legacy builder needs no buildx plugin; its output is shown only when the build fails
  if ! DOCKER_BUILDKIT=0 docker build --quiet --network none \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "CANOPY_EXTRAS=$extras" \
    "${tag_args[@]}" ${LABELS[@]+"${LABELS[@]}"} "$CONTEXT" >"$CONTEXT/build.log" 2>&1; then
    cat "$CONTEXT/build.log" >&2
    die "docker build failed"
  fi
}
build "" "${TAGS[@]}"
SERVICE_TAGS=()
for tag in "${TAGS[@]}"; do SERVICE_TAGS+=("${tag%:*}-services:${tag##*:}"); done
[[ "$SERVICES" == 0 ]] || build services "${SERVICE_TAGS[@]}"
say "built ${TAGS[*]}$([[ "$SERVICES" == 0 ]] || echo " ${SERVICE_TAGS[*]}")"
