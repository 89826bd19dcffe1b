#!/usr/bin/env bash
# A Docker engine of the project's own for the kind e2e: `dockerd.sh start|stop|env`.
#
# Debian's docker.io (dockerd 20.10), with everything under folders of ours, so it
# never meets a Docker engine the machine already runs:
#   state   ${GDP_DOCKER_ROOT:-/var/lib/gdp-docker}   (images, containers, volumes)
#   socket  /run/gdp-docker/docker.sock                 (DOCKER_HOST points there)
#   pid     /run/gdp-docker/dockerd.pid, log ${GDP_DOCKER_ROOT}/dockerd.log
# Nothing it runs may reach another machine:
#   --bridge=none      no default bridge (the one network docker would NAT to the world);
#                      the kind node joins only the --internal network run.sh creates
#   --dns=127.0.0.1    the embedded DNS of user networks forwards to loopback only
#   --ip-forward=false dockerd leaves the host's forwarding sysctl as it is
# and its default runtime is e2e/kind/runc-bounded: Debian's runc, with a privileged
# container's capabilities cut to the ones root here has (see that file).
# `start` is a no-op when our engine already answers; `stop` ends only the dockerd whose
# pid is in our pid file (and so the containerd it started), never any other.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${GDP_DOCKER_ROOT:-/var/lib/gdp-docker}
run=/run/gdp-docker
socket=$run/docker.sock
pidfile=$run/dockerd.pid
export DOCKER_HOST=unix://$socket

answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start() {
  if answers; then
    return 0
  fi
  command -v dockerd >/dev/null || {
    echo "dockerd is not installed: apt-get install docker.io" >&2
    exit 1
  }
  [ "$(id -u)" = 0 ] || { echo "dockerd.sh start needs root" >&2; exit 1; }
  mkdir -p "$root" "$run"
  # --exec-root and the containerd it starts live under $run; --data-root under $root.
  setsid dockerd \
    --host "$DOCKER_HOST" \
    --pidfile "$pidfile" \
    --data-root "$root/data" \
    --exec-root "$run/exec" \
    --bridge=none \
    --ip-forward=false \
    --dns=127.0.0.1 \
    --storage-driver=overlay2 \
    --log-driver=json-file \
    --add-runtime "gdp-runc=$here/runc-bounded" \
    --default-runtime gdp-runc \
    >>"$root/dockerd.log" 2>&1 </dev/null &
  local pid=$! waited=0
  until answers; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "dockerd exited at start; its log ($root/dockerd.log) ends:" >&2
      tail -n 20 "$root/dockerd.log" >&2
      exit 1
    fi
    if [ "$waited" -ge 60 ]; then
      echo "dockerd did not answer on $socket within 60 s; log: $root/dockerd.log" >&2
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "dockerd $(docker version --format '{{.Server.Version}}') up (pid $pid, $socket)" >&2
}

stop() {
  [ -f "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && grep -q dockerd "/proc/$pid/comm"; then
    kill -TERM "$pid"
    for _ in $(seq 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd $pid did not stop within 60 s: SIGKILL" >&2
      kill -KILL "$pid"
    fi
  fi
  rm -f "$pidfile"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  env) echo "export DOCKER_HOST=$DOCKER_HOST" ;;
  *)
    echo "usage: $0 start|stop|env" >&2
    exit 2
    ;;
esac
