#!/usr/bin/env bash
# Build a Debian base image for deploy/Dockerfile without pulling from any image registry:
# debootstrap a minimal Debian (bookworm: Python 3.11) with python3 and python3-venv into a
# temporary directory and `docker import` it.
#
#   sudo bash deploy/build-base-image.sh [--tag canopy-base:bookworm] [--force]
#
# Needs root, debootstrap and a running Docker daemon. Packages come from the Debian mirror in
# $DEBIAN_MIRROR, else the one this machine's apt uses. Skips the build when the tag exists
# (--force rebuilds). Prints the tag on stdout; progress goes to stderr.
set -euo pipefail

TAG="canopy-base:bookworm"
SUITE="bookworm"
FORCE=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tag) TAG="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-base-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build-base-image: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "debootstrap needs root: run it as root (or with sudo)"
command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install debootstrap"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (DOCKER_HOST=${DOCKER_HOST:-default})"

if [[ "$FORCE" == 0 ]] && docker image inspect "$TAG" >/dev/null 2>&1; then
  say "base image $TAG exists (use --force to rebuild)"
  echo "$TAG"
  exit 0
fi

apt_mirror() {  # the first Debian archive URI this machine's apt is configured with
  local uri
  uri="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' \
    | grep -v -- '-security' | grep '/debian/\?$' | head -n1 || true)"
  if [[ -z "$uri" ]]; then
    uri="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' \
      | grep -v -- '-security' | head -n1 || true)"
  fi
  printf '%s' "$uri"
}
MIRROR="${DEBIAN_MIRROR:-$(apt_mirror)}"
[[ -n "$MIRROR" ]] || die "no Debian mirror found: set DEBIAN_MIRROR to one"

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/canopy-rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/canopy/debootstrap-$SUITE"
mkdir -p "$CACHE"

say "debootstrap $SUITE (minbase + python3) into $ROOTFS"
debootstrap --variant=minbase --cache-dir="$CACHE" \
  --include=python3,python3-venv,ca-certificates,passwd \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
  || { tail -n 20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; die "debootstrap failed"; }
rm -f "$ROOTFS.log"

# what an image does not need: package lists, caches, docs
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
  "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*

say "docker import -> $TAG"
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' \
  --message "debootstrap --variant=minbase $SUITE + python3 (deploy/build-base-image.sh)" \
  - "$TAG" >/dev/null
echo "$TAG"
