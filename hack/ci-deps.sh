#!/usr/bin/env bash
# Debian packages the test suite needs that a fresh machine may lack:
#   prometheus  - promtool (rule checks and rule unit tests) and a real Prometheus server
#                 that the end-to-end metrics test scrapes.
# Skips apt entirely when everything is already there.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v make >/dev/null 2>&1 || need+=(make)
if ((${#need[@]})); then
  SUDO=""; [[ $(id -u) == 0 ]] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
