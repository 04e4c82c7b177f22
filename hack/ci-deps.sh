#!/usr/bin/env bash
# Debian packages the test suite needs that a fresh machine may lack:
#   prometheus  - promtool (rule checks and rule unit tests) and a real Prometheus server
#                 that the end-to-end metrics test scrapes.
#   nodejs, npm - npm installs n8n (hack/n8n.sh); n8n itself runs on the Node.js 24
#                 that hack/n8n.sh takes from the npm registry, so any Node.js here will do.
#   g++         - sqlite3 (an n8n dependency) compiles from source when no prebuilt fits.
# Skips apt entirely when everything is already there.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v make >/dev/null 2>&1 || need+=(make)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v g++ >/dev/null 2>&1 || need+=(g++)
if ((${#need[@]})); then
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
