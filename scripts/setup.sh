#!/usr/bin/env bash
# One-time setup on a Debian 12 host: system packages, npm packages, build, the two base images.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-system-deps.sh
npm ci
npm run build
node dist/src/cli/main.js image build busybox
node dist/src/cli/main.js image build debian --packages python3
