#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build and test ferrokube:
# protoc (etcd-client compiles its .proto files) and etcd/etcdctl (the store).
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: protoc, etcd and etcdctl are present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's etcd-server package starts a system etcd on 2379 where an init system runs;
# ferrokube starts its own, so stop that one if it is there.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  $SUDO systemctl disable --now etcd || true
fi
echo "install-deps: done"
