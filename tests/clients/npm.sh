#!/usr/bin/env bash
# Installs (once) the pinned npm packages of package.json / package-lock.json and prints
# the folder holding node_modules. Re-installs when the lock file changes. Safe to run
# concurrently.
#   TESSERA_NPM_DIR  where they live (default: <repo>/.npm-clients)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="${TESSERA_NPM_DIR:-$root/.npm-clients}"
want="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"
stamp="$dir/.lock.sha256"
mkdir -p "$dir"
exec 9>"$dir.lock"
flock 9
if [ ! -d "$dir/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$dir/"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  echo "$want" > "$stamp"
fi
echo "$dir"
