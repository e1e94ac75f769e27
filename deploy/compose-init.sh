#!/usr/bin/env bash
# Prepares the directory deploy/compose.yaml serves, with the images alone (no fedrag on the host):
#
#   deploy/compose-init.sh DIR silo-a=DOCS silo-b=DOCS silo-c=DOCS
#
# Creates a key pair per party (keys/<name>/), the membership file (federation.toml) listing each
# silo at http://<name>:8443 and the gateway, each silo directory (silos/<name>/: init, then ingest
# of DOCS, mounted read-only), and an end-user API key in api-keys.json, printed once at the end.
# DIR belongs to uid 10001, the images' user. Run it as root (or with Docker); it refuses a DIR
# that already holds a federation.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/engine.sh

if [ $# -lt 2 ] || [ "$1" = --help ] || [ "$1" = -h ]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
dir=$(realpath -m "$1")
shift
[ -e "$dir/federation.toml" ] && { echo "$dir already holds a federation (federation.toml)" >&2; exit 2; }
for pair in "$@"; do
    [[ $pair == *=* ]] && [ -d "${pair#*=}" ] || { echo "expected NAME=DOCUMENTS-DIRECTORY, got '$pair'" >&2; exit 2; }
done
mkdir -p "$dir"
chown 10001:10001 "$dir"

party() { engine run --rm --network none -v "$dir:/srv/fedrag" "$@"; }
party fedrag-gateway keys new /srv/fedrag/keys/gateway >/dev/null
party fedrag-gateway federation init /srv/fedrag/federation.toml --name compose >/dev/null
party fedrag-gateway federation add-gateway /srv/fedrag/federation.toml --name gateway \
    --public-key /srv/fedrag/keys/gateway/public.pem >/dev/null
for pair in "$@"; do
    name=${pair%%=*}
    party fedrag-silo keys new "/srv/fedrag/keys/$name" >/dev/null
    party fedrag-silo federation add-silo /srv/fedrag/federation.toml --name "$name" --url "http://$name:8443" \
        --public-key "/srv/fedrag/keys/$name/public.pem" >/dev/null
done
for pair in "$@"; do
    name=${pair%%=*} docs=$(realpath "${pair#*=}")
    echo "silo $name: init and ingest of $docs"
    party fedrag-silo silo init "/srv/fedrag/silos/$name" --federation /srv/fedrag/federation.toml \
        --key "/srv/fedrag/keys/$name/private.pem" --name "$name" >/dev/null
    party -v "$docs:/data:ro" fedrag-silo silo ingest "/srv/fedrag/silos/$name" /data
done
party fedrag-gateway gateway keys add /srv/fedrag/api-keys.json compose
