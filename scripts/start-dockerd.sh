#!/usr/bin/env bash
# Installs docker.io and runsc from Debian, registers gVisor, and starts dockerd when none answers.
# No bridge and no iptables: sandboxes run with network none, and the host's firewall stays as it was.
# --host-uds=open lets a gVisor sandbox connect to its egress proxy's Unix socket (bound into it).
# --oci-seccomp applies Docker's seccomp profile inside gVisor too (no unshare, mount, ... from the sandbox).
# experimental: docker checkpoint, with which idle gVisor sandboxes are hibernated (pauseAfter mode hibernate).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
[ -x /usr/sbin/dockerd ] || need+=(docker.io)
command -v runsc >/dev/null || need+=(runsc)
# a registry for the image pull tests (loopback only, started by the tests themselves)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq || true
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p /etc/docker
want='{"bridge":"none","iptables":false,"experimental":true,"runtimes":{"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--network=none","--host-uds=open","--oci-seccomp"]}}}'
if [ "$(cat /etc/docker/daemon.json 2>/dev/null)" != "$want" ]; then
  echo "$want" > /etc/docker/daemon.json
  pkill -x dockerd 2>/dev/null && sleep 1 || true
fi
if ! /usr/bin/docker info >/dev/null 2>&1; then
  # A session of its own: whoever ran this script (a shell job, a CI step, a tool runner) may kill its
  # process group when it ends, and dockerd must not go with it.
  setsid nohup /usr/sbin/dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 100); do /usr/bin/docker info >/dev/null 2>&1 && break; sleep 0.2; done
fi
/usr/bin/docker info --format 'dockerd {{.ServerVersion}} ({{.Driver}}, cgroup {{.CgroupVersion}}), runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}'
