#!/usr/bin/env bash
# Debian packages the platform uses on this machine, installed when missing and run as root; otherwise
# said once. `make` installs bubblewrap (it gives local workloads their volume mounts, and a training
# cluster's pods their own host names; without it they get links and the host's name) and the OpenSSH client
# (a local cluster's launcher reaches its workers with it); `make test` also installs the CNCF distribution registry (docker-registry), which the image
# commit tests push to (without it they are skipped, saying so).
#   bash deploy/dev/debian-packages.sh [--for-tests]
set -u
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
if [ "${1:-}" = "--for-tests" ]; then
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
        || echo "could not install ${missing[*]} (without them, local volume mounts are links and local" \
            "clusters' launchers cannot reach their workers)"
else
    echo "${missing[*]} missing (as root: apt-get install ${missing[*]}); without them, local volume" \
        "mounts are links and local clusters' launchers cannot reach their workers"
fi
exit 0
