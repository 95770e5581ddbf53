#!/usr/bin/env bash
# Prometheus's `promtool` (checks and unit-tests deploy/prometheus/alerts.yaml), from Debian's
# `prometheus` package, unpacked (never installed) under .local/tools:
#
#   bash scripts/promtool.sh     # fetch + unpack when missing; prints nothing when done
#   .local/tools/bin/promtool --version
#
# `apt-get download` fetches the .deb (no root needed for the download itself; an empty or old
# package list needs `apt-get update`, which this runs once as root when the package has no
# candidate), `dpkg -x` unpacks it into .local/tools/prometheus; no maintainer script runs, no
# Prometheus daemon or service is installed, nothing outside .local/tools changes. promtool is
# a static Go binary, so it runs from there as is. Idempotent: a promtool that is there and
# runs is left alone. The same pattern as bench/peers.sh.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TOOLS="${TIDINGS_LOCAL_DIR:-$ROOT/.local}/tools"
PKG=prometheus
UNPACKED="$TOOLS/$PKG"
BIN="$TOOLS/bin/promtool"

die() {
    printf 'error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf 'fix: %s\n' "$2" >&2
    exit 1
}

works() {
    [ -x "$BIN" ] && "$BIN" --version >/dev/null 2>&1
}

has_candidate() {
    local c
    c="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
    [ -n "$c" ] && [ "$c" != "(none)" ]
}

fetch() {
    local scratch
    command -v apt-get >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1 ||
        die "apt-get/dpkg are missing: promtool is unpacked from Debian's $PKG package" \
            "on a non-Debian machine, put a promtool binary (Prometheus 2.x release tarball) at $BIN"
    if ! has_candidate "$PKG"; then
        [ "$(id -u)" -eq 0 ] || die "apt knows no package $PKG (stale package list)" \
            "run: sudo apt-get update, then bash scripts/promtool.sh again"
        apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed" "check /etc/apt/sources.list"
        has_candidate "$PKG" || die "apt knows no package $PKG even after apt-get update" \
            "enable Debian main in /etc/apt/sources.list, or put a promtool binary at $BIN"
    fi
    scratch="$(mktemp -d "${TMPDIR:-/tmp}/tidings-promtool.XXXXXX")"
    # APT drops to the _apt user for downloads; it cannot write a private scratch dir.
    (cd "$scratch" && apt-get download -q -o APT::Sandbox::User=root "$PKG" >"$scratch/apt.log" 2>&1) || {
        tail -3 "$scratch/apt.log" >&2
        rm -rf "$scratch"
        die "apt-get download $PKG failed" "check the Debian mirror, then bash scripts/promtool.sh again"
    }
    rm -rf "$UNPACKED.tmp"
    mkdir -p "$UNPACKED.tmp"
    dpkg -x "$scratch"/"$PKG"_*.deb "$UNPACKED.tmp" || {
        rm -rf "$scratch" "$UNPACKED.tmp"
        die "dpkg -x of the $PKG package failed" "delete $TOOLS and run bash scripts/promtool.sh again"
    }
    basename "$scratch"/"$PKG"_*.deb >"$UNPACKED.tmp/.deb"
    rm -rf "$scratch" "$UNPACKED"
    mv "$UNPACKED.tmp" "$UNPACKED"
    [ -x "$UNPACKED/usr/bin/promtool" ] || die "the $PKG package has no usr/bin/promtool" \
        "list it with: dpkg -c ${PKG}_*.deb; put a promtool binary at $BIN"
    mkdir -p "$TOOLS/bin"
    ln -sfn "../$PKG/usr/bin/promtool" "$BIN"
    works || die "unpacked $PKG but promtool does not run" "run $BIN --version to see why"
    printf 'promtool: unpacked %s into %s (%s)\n' "$(cat "$UNPACKED/.deb")" "$UNPACKED" "$BIN"
}

works || fetch
