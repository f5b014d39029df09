#!/usr/bin/env bash
# Set up agentbox on a Debian 12 host, as root; safe to run again (what is done already is skipped).
#
# Usage: ./scripts/setup.sh [--with-docker]
#   (no flag)       system packages, npm ci, build, the busybox and debian (python3) images,
#                   `agentbox` on PATH (/usr/local/bin/agentbox runs this checkout), then which
#                   runtimes are ready and how to enable the others
#   --with-docker   also install docker.io and runsc and start dockerd with gVisor registered
#                   (scripts/start-dockerd.sh): the docker and gvisor runtimes
#   -h, --help      this text
#
# Images go to $AGENTBOX_IMAGES, default $AGENTBOX_HOME/images, default ~/.agentbox/images.
set -euo pipefail
usage() { sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
with_docker=0
for arg in "$@"; do
  case "$arg" in
    --with-docker) with_docker=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown argument $arg" >&2; usage >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
step() { printf '==> %s\n' "$*"; }
agentbox() { node dist/src/cli/main.js "$@"; }

step "system packages"
./scripts/install-system-deps.sh
if [ "$with_docker" = 1 ]; then
  step "dockerd with runsc (gVisor)"
  ./scripts/start-dockerd.sh
fi

step "npm ci"
npm ci --no-audit --no-fund --loglevel=error
step "build (TypeScript and the native helpers)"
npm run build --silent

# Each image once: a rebuild would give it a new id for nothing (debian takes ~20 s).
has_image() {  # has_image NAME [PACKAGE...]
  agentbox image ls --json | node -e '
    const [name, ...pkgs] = process.argv.slice(1); let s = "";
    process.stdin.on("data", (d) => (s += d)).on("end", () => {
      const i = JSON.parse(s).find((x) => x.name === name);
      process.exit(i && pkgs.every((p) => (i.packages ?? []).includes(p)) ? 0 : 1);
    });' "$@"
}
step "images"
if has_image busybox; then echo "    busybox: present"; else agentbox image build busybox >/dev/null; echo "    busybox: built"; fi
if has_image debian python3; then echo "    debian (python3): present"; else agentbox image build debian --packages python3 >/dev/null; echo "    debian (python3): built"; fi

step "agentbox on PATH"
./scripts/install-cli.sh

step "runtimes"
status=0
report=$(mktemp)
agentbox doctor --json > "$report" || status=$?
node -e '
  const lines = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const { ready, notReady } = lines.pop().summary;
  console.log(`    ready: ${ready.join(", ") || "none"}`);
  for (const n of notReady) console.log(`    not ready: ${n.runtime} (${n.why.join(", ")})${n.fixes.length ? `: ${n.fixes.join("; ")}` : ""}`);
' "$report"
rm -f "$report"
echo "    every check and its fix: agentbox doctor"
if [ "$status" != 0 ]; then
  echo "setup.sh: the local runtime cannot run on this host yet; run agentbox doctor and apply its fixes" >&2
  exit 1
fi
