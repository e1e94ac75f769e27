#!/usr/bin/env bash
# Builds the fedrag-serve images: fedrag-silo, fedrag-gateway and fedrag-llm (make images).
#
#   deploy/images.sh [silo|gateway|llm ...]     (default: all three)
#
# With Docker (a running daemon): plain `docker build` from python:3.11-slim (BASE to change it).
# With podman and no registry (our development machines, ../shared/CONTAINERS.md): podman runs
# with runc and a config without default ulimits, and the base is debian-local:bookworm, made
# once with debootstrap (about a minute, 275 MB; kept in podman's image store). The host's CA
# bundle and, where present, its local wheel directory /opt/wheels (the CPU build of torch) are
# mounted into the build. Measured here (2 cores), from an empty image store, debootstrap included:
# about 5 minutes for all three (silo 2.1 GB, gateway 2.0 GB, llm 2.1 GB); later builds reuse the layers.
#
# Environment: ENGINE (docker or podman; default: docker if present, else podman), BASE,
# TORCH_PIP_ARGS, DEBIAN_MIRROR (default: the URI of this host's apt sources).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/engine.sh

targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(silo gateway llm)
for target in "${targets[@]}"; do
    case $target in
        silo | gateway | llm) ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown image '$target' (silo, gateway or llm)" >&2; exit 2 ;;
    esac
done

args=(--network host)
# podman: the Docker image format, which keeps HEALTHCHECK (OCI images drop it).
[ "$ENGINE" = podman ] && args+=(--format docker)
if [ "$ENGINE" = podman ]; then
    BASE=${BASE:-debian-local:bookworm}
    if [ "$BASE" = debian-local:bookworm ] && ! engine image exists "$BASE"; then
        command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
        mirror=${DEBIAN_MIRROR:-}
        if [ -z "$mirror" ]; then  # the mirror apt uses here (a missing sources file is no error)
            mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
                | grep -oE '^(URIs:|deb) +https?://[^ ]+/debian/?' | head -1 | awk '{print $2}' || true)
        fi
        mirror=${mirror:-http://deb.debian.org/debian}
        work=$(mktemp -d)
        trap 'rm -rf "$work"' EXIT
        echo "building the base image debian-local:bookworm with debootstrap from $mirror"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$work/rootfs" "$mirror" \
            >"$work/debootstrap.log" || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
        tar -C "$work/rootfs" -cf "$work/rootfs.tar" .
        engine import "$work/rootfs.tar" debian-local:bookworm >/dev/null
    fi
fi
[ -n "${BASE:-}" ] && args+=(--build-arg "BASE=$BASE")
# Only podman mounts volumes into a build: the host's CA bundle, and its local CPU build of torch.
if [ "$ENGINE" = podman ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    args+=(-v /etc/ssl/certs:/etc/ssl/certs:ro --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
if [ "$ENGINE" = podman ] && [ -z "${TORCH_PIP_ARGS:-}" ] && compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    TORCH_PIP_ARGS="torch==2.13.0+cpu --find-links /opt/wheels"
    args+=(-v /opt/wheels:/opt/wheels:ro)
fi
[ -n "${TORCH_PIP_ARGS:-}" ] && args+=(--build-arg "TORCH_PIP_ARGS=$TORCH_PIP_ARGS")

for target in "${targets[@]}"; do
    case $target in
        silo) build=(-f deploy/silo.Dockerfile -t fedrag-silo) ;;
        gateway) build=(-f deploy/gateway.Dockerfile --target gateway -t fedrag-gateway) ;;
        llm) build=(-f deploy/gateway.Dockerfile --target llm -t fedrag-llm) ;;
    esac
    echo "building fedrag-$target with $ENGINE"
    engine build "${args[@]}" "${build[@]}" .
done
