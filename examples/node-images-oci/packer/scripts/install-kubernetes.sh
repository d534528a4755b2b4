#!/bin/sh
# Installs the pinned container runtime and Kubernetes packages on the node image.
set -eu
series="${KUBERNETES_SERIES}"
apt-get update
apt-get install -y apt-transport-https ca-certificates curl gpg
curl -fsSL "https://pkgs.k8s.io/core:/stable:/${series}/deb/Release.key" | gpg --dearmor -o /etc/apt/keyrings/kubernetes.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes.gpg] https://pkgs.k8s.io/core:/stable:/${series}/deb/ /" > /etc/apt/sources.list.d/kubernetes.list
apt-get update
apt-get install -y "kubelet=${KUBERNETES_DEB_VERSION}" "kubeadm=${KUBERNETES_DEB_VERSION}" "kubectl=${KUBERNETES_DEB_VERSION}"
apt-mark hold kubelet kubeadm kubectl
curl -fsSLo /usr/local/sbin/runc "https://github.com/opencontainers/runc/releases/download/v${RUNC_VERSION}/runc.amd64"
chmod 0755 /usr/local/sbin/runc
curl -fsSL "https://github.com/containerd/containerd/releases/download/v${CONTAINERD_VERSION}/containerd-${CONTAINERD_VERSION}-linux-amd64.tar.gz" | tar -xz -C /usr/local
