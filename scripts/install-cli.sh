#!/usr/bin/env bash
# Puts `agentbox` on PATH: a small wrapper, /usr/local/bin/agentbox, that runs this checkout's built CLI.
#
# Why a wrapper and not `npm link` or a symlink to dist/src/cli/main.js: tsc writes main.js without the
# exec bit, so a symlink stops working after `rm -rf dist && npm run build`; `npm link` goes through
# npm's global prefix and breaks the same way. A wrapper needs no exec bit on main.js, survives
# `npm ci` and rebuilds, and can say what is wrong when the checkout moved or is not built.
#
# Usage: scripts/install-cli.sh [--checkout DIR] [--bin-dir DIR]
#   --checkout DIR   the checkout the wrapper runs (default: the one this script is in)
#   --bin-dir DIR    where to write it (default: /usr/local/bin)
set -euo pipefail
checkout=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=/usr/local/bin
while [ $# -gt 0 ]; do
  case "$1" in
    --checkout) checkout=$(cd "${2:?--checkout needs a directory}" && pwd); shift 2 ;;
    --bin-dir) bin_dir=${2:?--bin-dir needs a directory}; shift 2 ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-cli.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$checkout" in *"'"*|*$'\n'*) echo "install-cli.sh: cannot write a wrapper for a path with a quote or newline: $checkout" >&2; exit 1 ;; esac
[ -f "$checkout/package.json" ] || { echo "install-cli.sh: $checkout is not an agentbox checkout (no package.json)" >&2; exit 1; }
node=$(command -v node) || { echo "install-cli.sh: node is not on PATH (agentbox needs Node.js 20)" >&2; exit 1; }
target="$bin_dir/agentbox"
marker='# agentbox-cli-wrapper'

# Say what this replaces: another checkout's wrapper, an `npm link`, or something else.
if [ -e "$target" ] || [ -L "$target" ]; then
  if grep -q "^$marker" "$target" 2>/dev/null; then
    prev=$(sed -n "s/^checkout='\(.*\)'$/\1/p" "$target")
    [ "$prev" = "$checkout" ] || echo "    replacing $target, which ran the checkout at $prev"
  else
    echo "    replacing $target (was $( [ -L "$target" ] && echo "a link to $(readlink -f "$target" || readlink "$target")" || echo "a file not written by agentbox's setup"))"
  fi
fi

mkdir -p "$bin_dir"
tmp=$(mktemp "$bin_dir/.agentbox.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<EOF
#!/bin/sh
$marker, written by scripts/install-cli.sh (./scripts/setup.sh). It runs the CLI of one checkout;
# run ./scripts/setup.sh (or scripts/install-cli.sh) in another checkout to point it there.
checkout='$checkout'
# the node that ran the setup (better-sqlite3 is built for its ABI); the one on PATH if it is gone
node='$node'
main="\$checkout/dist/src/cli/main.js"
if [ ! -f "\$main" ] || [ ! -d "\$checkout/node_modules" ]; then
  if [ ! -f "\$checkout/package.json" ]; then
    echo "agentbox: the checkout at \$checkout is gone (moved or deleted): run ./scripts/setup.sh in the checkout you use now" >&2
  elif [ ! -d "\$checkout/node_modules" ]; then
    echo "agentbox: \$checkout has no node_modules: cd \$checkout && npm ci && npm run build" >&2
  else
    echo "agentbox: \$checkout is not built: cd \$checkout && npm run build" >&2
  fi
  exit 125
fi
[ -x "\$node" ] || node=node
exec "\$node" "\$main" "\$@"
EOF
chmod 755 "$tmp"
mv -f "$tmp" "$target"
trap - EXIT

# Is it the agentbox a shell finds? A bin dir missing from PATH, or another agentbox before it, would hide it.
found=$(PATH="$PATH" command -v agentbox || true)
case ":$PATH:" in
  *":$bin_dir:"*) [ "$found" = "$target" ] || echo "    note: $found comes before $target on PATH and hides it; remove it or put $bin_dir first" ;;
  *) echo "    note: $bin_dir is not on PATH; add it, or run $target" ;;
esac
echo "    agentbox -> $checkout ($("$target" --version))"
