# Sourced by the container scripts: picks the OCI engine (a Docker client with a running daemon,
# else podman) and defines `engine` to call it. podman gets a containers.conf (unless
# CONTAINERS_CONF names one) with runc as its runtime and no default ulimits: crun refuses the
# cgroup setup of our development machines and the default ulimits cannot be set there
# (../shared/CONTAINERS.md); podman-compose reads the same file.
if [ -z "${ENGINE:-}" ] && ! command -v podman >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then
    echo "installing podman, runc and debootstrap (Debian packages)"
    apt-get install -y -qq podman runc debootstrap >/dev/null 2>&1 \
        || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq podman runc debootstrap >/dev/null 2>&1; } || true
fi
if [ -z "${ENGINE:-}" ]; then
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then ENGINE=docker
    elif command -v podman >/dev/null; then ENGINE=podman
    else echo "no container engine: install docker, or podman and runc (apt-get install podman runc debootstrap)" >&2; exit 2
    fi
fi
if [ "$ENGINE" = podman ]; then
    if [ -z "${CONTAINERS_CONF:-}" ]; then
        CONTAINERS_CONF=${TMPDIR:-/tmp}/fedrag-containers.conf
        printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
        export CONTAINERS_CONF
    fi
    engine() { podman "$@"; }
else
    engine() { docker "$@"; }
fi
