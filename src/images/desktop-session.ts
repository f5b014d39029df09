/**
 * The files the `desktop` recipe (src/images/recipes.ts) puts into its image: the session script
 * `/usr/local/bin/agentbox-desktop` and the page Chromium opens first.
 *
 * The session is one Xvnc (TigerVNC: an X server and a VNC server in one process, so there is no
 * separate Xvfb + x11vnc pair copying the framebuffer between them), openbox, and Chromium, all as
 * the sandbox user. Xvnc listens on 127.0.0.1:5900 only and asks no password (SecurityTypes None):
 * a sandbox's network is closed, and its ports are reached only through the daemon's authenticated
 * `openPort` (the VNC WebSocket route, the port routes), so whoever reaches 5900 was let in already.
 * Chromium's DevTools listen on 127.0.0.1:9222 for the agent (computer use), reached the same way.
 */

import { DESKTOP_DEVTOOLS_PORT, DESKTOP_SCRIPT_PATH, DESKTOP_VNC_PORT } from '../contract/desktop.js';

export { DESKTOP_SCRIPT_PATH } from '../contract/desktop.js';
export const DESKTOP_START_PAGE = '/usr/local/share/agentbox-desktop/start.html';

/**
 * `agentbox-desktop start|status|stop`. `start` is idempotent (a lock, then nothing to do when Xvnc
 * already listens) and returns once the VNC port accepts: its children are in sessions of their own
 * with their output in /tmp/agentbox-desktop/*.log, so the exec that ran it ends and they go on
 * (an exec ends when its leader exits; what it left running stays, native/exec-relay.h).
 * `status` prints one JSON line. Exit 0 when running, 3 when not.
 */
export const DESKTOP_SCRIPT = `#!/bin/sh
# agentbox-desktop: the desktop session of an agentbox desktop sandbox (Xvnc + openbox + Chromium).
# Written by agentbox image build desktop (src/images/desktop-session.ts). start | status | stop
set -u
DISPLAY_NUM=1
VNC_PORT=${DESKTOP_VNC_PORT}
DEVTOOLS_PORT=${DESKTOP_DEVTOOLS_PORT}
GEOMETRY=\${AGENTBOX_DESKTOP_GEOMETRY:-1280x800}
STATE=/tmp/agentbox-desktop
export DISPLAY=:$DISPLAY_NUM
export HOME=\${HOME:-/workspace}
[ -w "$HOME" ] || export HOME=$STATE/home

# Whether something listens on 127.0.0.1/any/::1 PORT in this sandbox (state 0A in /proc/net/tcp*).
listening() {
  hex=$(printf '%04X' "$1")
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { found = 1 } END { exit !found }'
}

status() {
  w=\${GEOMETRY%x*}; h=\${GEOMETRY#*x}
  [ -f "$STATE/geometry" ] && { g=$(cat "$STATE/geometry"); w=\${g%x*}; h=\${g#*x}; }
  running=false; chromium=false
  listening "$VNC_PORT" && running=true
  listening "$DEVTOOLS_PORT" && chromium=true
  printf '{"running":%s,"display":"%s","width":%s,"height":%s,"vncPort":%s,"devtoolsPort":%s,"chromium":%s}\\n' "$running" "$DISPLAY" "$w" "$h" "$VNC_PORT" "$DEVTOOLS_PORT" "$chromium"
  [ "$running" = true ]
}

# Run a program in a session of its own, detached from this exec: no inherited lock, no exec pipes.
detach() {
  log=$1; shift
  setsid "$@" </dev/null >"$STATE/$log.log" 2>&1 9>&- &
}

wait_for() {
  i=0
  while ! "$@"; do
    i=$((i + 1)); [ $i -gt 150 ] && return 1
    sleep 0.1
  done
}

start() {
  mkdir -p "$STATE" "$HOME"
  exec 9>"$STATE/lock"
  flock 9
  if listening "$VNC_PORT"; then status; return $?; fi
  echo "$GEOMETRY" > "$STATE/geometry"
  # No blacklist: it counts connections closed before the handshake (the daemon's probes) against
  # 127.0.0.1, the only address that reaches it, and there is no password to guess.
  detach xvnc Xvnc ":$DISPLAY_NUM" -geometry "$GEOMETRY" -depth 24 -rfbport "$VNC_PORT" -localhost -interface 127.0.0.1 \\
    -SecurityTypes None -AlwaysShared -nolisten tcp -desktop agentbox -BlacklistThreshold 1000000 -BlacklistTimeout 0
  if ! wait_for listening "$VNC_PORT"; then echo "agentbox-desktop: Xvnc did not start:" >&2; tail -n 20 "$STATE/xvnc.log" >&2; return 1; fi
  detach openbox openbox
  # Chromium's own sandbox needs user namespaces: kept where the runtime lets the sandbox make one
  # (a second wall inside ours); elsewhere the agentbox sandbox around it is the boundary.
  nosandbox=--no-sandbox
  unshare -Ur true 2>/dev/null && nosandbox=
  detach chromium chromium $nosandbox --no-first-run --no-default-browser-check --disable-gpu \\
    --disable-dev-shm-usage --password-store=basic --disable-features=Translate,MediaRouter \\
    --user-data-dir="$STATE/chromium" --remote-debugging-address=127.0.0.1 --remote-debugging-port="$DEVTOOLS_PORT" \\
    --window-position=0,0 --window-size="\${GEOMETRY%x*},\${GEOMETRY#*x}" --start-maximized "file://${DESKTOP_START_PAGE}"
  wait_for listening "$DEVTOOLS_PORT" || echo "agentbox-desktop: Chromium's DevTools port is not up yet (see $STATE/chromium.log)" >&2
  status
}

stop() {
  for p in chromium openbox Xvnc; do pkill -x "$p" 2>/dev/null; done
  status >/dev/null; [ $? -eq 0 ] && sleep 1
  status || true
}

case "\${1:-status}" in
  start) start ;;
  status) status || exit 3 ;;
  stop) stop ;;
  *) echo "usage: agentbox-desktop start|status|stop" >&2; exit 2 ;;
esac
`;

/** What Chromium shows first: something visible (colours, text) rather than a blank page. */
export const DESKTOP_START_HTML = `<!doctype html>
<html><head><meta charset="utf-8"><title>agentbox desktop</title>
<style>
  body { margin: 0; height: 100vh; display: flex; align-items: center; justify-content: center;
         font: 32px "DejaVu Sans", sans-serif; color: #fff;
         background: linear-gradient(135deg, #1d4e89 0%, #2f9e8f 50%, #f2a541 100%); }
  main { background: rgba(0,0,0,.35); padding: 1.5em 2em; border-radius: 12px; }
  small { display: block; font-size: 18px; margin-top: .5em; opacity: .85; }
</style></head>
<body><main>agentbox desktop<small>Chromium, DevTools on 127.0.0.1:${DESKTOP_DEVTOOLS_PORT} inside the sandbox</small></main></body></html>
`;
