#!/usr/bin/env bash
# Debian packages the local runtime uses: bubblewrap gives workloads their volume mounts; the CNCF
# distribution registry (docker-registry) is the registry the image commit tests push to.
# Installed when missing and run as root; otherwise said once, and the runtime falls back to links.
set -u
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
        || echo "could not install ${missing[*]}: without bubblewrap volume mounts on the local runtime are links"
else
    echo "${missing[*]} missing (install as root: apt-get install ${missing[*]}); without bubblewrap volume" \
        "mounts on the local runtime are links"
fi
exit 0
