#!/usr/bin/env bash
# Install the npm test peers under .local/npm (git-ignored). Idempotent: does nothing when
# every peer is already there at the pinned version. Needs node >= 18 and npm.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PREFIX="$ROOT/.local/npm"
PEERS=(
  "@stoplight/prism-cli@5.16.0"   # OpenAPI mock server: serves Twilio's spec for the SMS tests
  "@twilio/cli-core@9.0.0"        # ships src/services/twilio-api/twilio_api_v2010.json
  "web-push-testing@1.2.2"        # Web Push service that decrypts what it receives
)
command -v npm >/dev/null || { echo "error: npm not found; apt-get install -y nodejs npm" >&2; exit 1; }
missing=()
for spec in "${PEERS[@]}"; do
  name="${spec%@*}"; version="${spec##*@}"
  pkg="$PREFIX/node_modules/$name/package.json"
  if [[ ! -f "$pkg" ]] || ! grep -q "\"version\": \"$version\"" "$pkg"; then
    missing+=("$spec")
  fi
done
if (( ${#missing[@]} == 0 )); then
  echo "npm peers present in $PREFIX"
  exit 0
fi
mkdir -p "$PREFIX"
echo "installing ${missing[*]} into $PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error "${missing[@]}"
