#!/usr/bin/env bash
# What the chaos suite needs beyond `make up`: unshare (util-linux), ip (iproute2) and nft
# (nftables) for its network namespace and the partition. Installs what is missing, once.
set -euo pipefail
missing=()
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
    echo "error: the chaos suite needs root (network namespaces) and: ${missing[*]}" >&2
    echo "  fix: sudo apt-get install -y ${missing[*]}, then run make chaos as root" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}"
mkdir -p .local
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >.local/apt-chaos.log 2>&1; then
    tail -5 .local/apt-chaos.log >&2
    echo "error: apt-get could not install ${missing[*]} (log: .local/apt-chaos.log)" >&2
    exit 1
fi
