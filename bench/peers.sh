#!/usr/bin/env bash
# The bench's fast real peers, from Debian's packages, unpacked (never installed) under
# .local/peers: Postfix's smtp-sink (package postfix), nginx (package nginx), and ApacheBench
# (apache2-utils, with its libapr1 and libaprutil1) for the gateway rows; and socket.io-client
# (npm, the version bench/sockets/package-lock.json pins) for the gateway-sockets rows.
#
#   bash bench/peers.sh          # fetch + unpack what is missing; prints nothing when done
#
# `apt-get download` fetches the .deb (no root needed for the download itself; an empty or old
# package list needs `apt-get update`, which this runs once as root when a package has no
# candidate), `dpkg -x` unpacks it into .local/peers/<package>; no maintainer script runs, no
# MTA or web server is installed, nothing outside .local/peers changes. Idempotent: a package
# whose binary is there and runs is left alone. bench/peers.py starts the binaries.
#
# socket.io-client: `npm ci` of bench/sockets/package.json + package-lock.json into
# .local/peers/sockets (bench/sockets_loadgen.js requires it from there), again only when its
# installed lock differs from the repo's. Without npm it warns and skips: only the
# gateway-sockets rows need it (they then fail saying so).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
PEERS="${TIDINGS_LOCAL_DIR:-$ROOT/.local}/peers"

die() {
    printf 'error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf '  fix: %s\n' "$2" >&2
    exit 1
}

# works PACKAGE: its unpacked binary exists and starts (so its libraries resolve).
works() {
    case "$1" in
        postfix) # without arguments smtp-sink prints its usage and exits 1
            local out
            out="$(LD_LIBRARY_PATH="$PEERS/postfix/usr/lib/postfix" \
                "$PEERS/postfix/usr/sbin/smtp-sink" 2>&1 || true)"
            [[ "$out" == *usage:* ]] ;;
        nginx) "$PEERS/nginx/usr/sbin/nginx" -v >/dev/null 2>&1 ;;
        libapr1 | libaprutil1) ls "$PEERS/$1"/usr/lib/x86_64-linux-gnu/*.so.* >/dev/null 2>&1 ;;
        apache2-utils) # ab, the gateway rows' load generator (bench/gateway.py)
            LD_LIBRARY_PATH="$PEERS/libapr1/usr/lib/x86_64-linux-gnu:$PEERS/libaprutil1/usr/lib/x86_64-linux-gnu" \
                "$PEERS/apache2-utils/usr/bin/ab" -V >/dev/null 2>&1 ;;
    esac
}

has_candidate() {
    local c
    c="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
    [ -n "$c" ] && [ "$c" != "(none)" ]
}

# fetch PACKAGE: download its .deb into a scratch dir and unpack it into $PEERS/PACKAGE.
fetch() {
    local pkg="$1" scratch
    command -v apt-get >/dev/null 2>&1 || die "apt-get is missing: the bench unpacks $pkg from Debian" \
        "on a non-Debian machine, unpack postfix and nginx packages under $PEERS/postfix and $PEERS/nginx by hand"
    if ! has_candidate "$pkg"; then
        [ "$(id -u)" -eq 0 ] || die "apt knows no package $pkg (stale package list)" \
            "run: sudo apt-get update, then make bench again"
        apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed" "check /etc/apt/sources.list"
    fi
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/tidings-peers.XXXXXX")"
    # APT drops to the _apt user for downloads; it cannot write a private scratch dir.
    (cd "$scratch" && apt-get download -q -o APT::Sandbox::User=root "$pkg" >"$scratch/apt.log" 2>&1) || {
        tail -3 "$scratch/apt.log" >&2
        rm -rf "$scratch"
        die "apt-get download $pkg failed" "check the Debian mirror, then make bench again"
    }
    rm -rf "$PEERS/$pkg.tmp"
    mkdir -p "$PEERS/$pkg.tmp"
    dpkg -x "$scratch"/"$pkg"_*.deb "$PEERS/$pkg.tmp"
    basename "$scratch"/"$pkg"_*.deb >"$PEERS/$pkg.tmp/.deb"
    rm -rf "$scratch" "$PEERS/$pkg"
    mv "$PEERS/$pkg.tmp" "$PEERS/$pkg"
    works "$pkg" || die "unpacked $pkg but its binary does not run" \
        "see: ldd $PEERS/$pkg/usr/sbin/*; a missing library is apt-get install away"
    printf 'bench: unpacked %s into %s\n' "$(cat "$PEERS/$pkg/.deb")" "$PEERS/$pkg"
}

mkdir -p "$PEERS"
for pkg in postfix nginx libapr1 libaprutil1 apache2-utils; do
    works "$pkg" || fetch "$pkg"
done

# sockets: socket.io-client for bench/sockets_loadgen.js (bench/gateway_sockets.py).
sockets() {
    local dir="$PEERS/sockets" src="$HERE/sockets"
    if cmp -s "$src/package-lock.json" "$dir/package-lock.json" \
        && [ -f "$dir/node_modules/socket.io-client/package.json" ]; then
        return 0
    fi
    if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
        printf 'bench: warning: node/npm missing: skipping socket.io-client (the gateway-sockets rows need it)\n' >&2
        return 0
    fi
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp"
    cp "$src/package.json" "$src/package-lock.json" "$dir.tmp/"
    (cd "$dir.tmp" && timeout 300 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >"$dir.tmp/npm.log" 2>&1) || {
        tail -5 "$dir.tmp/npm.log" >&2
        die "npm ci of socket.io-client failed" "check the npm registry (npm config get registry), then make bench again"
    }
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    printf 'bench: installed socket.io-client %s into %s\n' \
        "$(node -p 'require(process.argv[1]).version' "$dir/node_modules/socket.io-client/package.json")" "$dir"
}
sockets
