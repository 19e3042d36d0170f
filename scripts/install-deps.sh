#!/usr/bin/env bash
# Install what a fresh Debian machine lacks to build and test ferrokube:
# protoc (etcd-client and k8s-cri compile their .proto files), etcd/etcdctl (the store),
# and the kubelet's runtime: containerd, runc, the CNI plug-ins and busybox-static (the
# local busybox image is built from it), and iptables, nftables and conntrack for kube-proxy.
# Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v containerd >/dev/null 2>&1 || need+=(containerd)
command -v runc >/dev/null 2>&1 || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
[ -x /bin/busybox ] || need+=(busybox-static)
# kube-proxy programs the nat table through iptables-restore (the CNI plug-ins need it too)
command -v iptables-restore >/dev/null 2>&1 || need+=(iptables)
# kube-proxy's nftables mode (what `ferrokube up` picks where it works) runs `nft -f -`
command -v nft >/dev/null 2>&1 || need+=(nftables)
# kube-proxy deletes stale UDP conntrack entries with it
command -v conntrack >/dev/null 2>&1 || need+=(conntrack)

if [ ${#need[@]} -eq 0 ]; then
  echo "install-deps: protoc, etcd, containerd, runc, CNI plug-ins, busybox, iptables, nft and conntrack are present"
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
