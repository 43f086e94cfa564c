#!/usr/bin/env bash
# Debian packages the platform uses on this machine, installed when missing and run as root; otherwise
# said once. `make` installs bubblewrap (it gives local workloads their volume mounts; without it they get
# links); `make test` also installs the CNCF distribution registry (docker-registry), which the image
# commit tests push to (without it they are skipped, saying so).
#   bash deploy/dev/debian-packages.sh [--for-tests]
set -u
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ "${1:-}" = "--for-tests" ]; then
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
        || echo "could not install ${missing[*]} (without bubblewrap, local volume mounts are links)"
else
    echo "${missing[*]} missing (as root: apt-get install ${missing[*]}); without bubblewrap, local volume" \
        "mounts are links"
fi
exit 0
