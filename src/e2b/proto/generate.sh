#!/usr/bin/env bash
# Regenerate src/e2b/gen/ from the envd .proto files here (see README.md for their origin).
# Uses the project's pinned devDependencies (@bufbuild/buf, @bufbuild/protoc-gen-es); no network.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
export PATH="$root/node_modules/.bin:$PATH"
rm -rf "$here/../gen"
cd "$here" && buf generate
