#!/usr/bin/env bash
# Run the recipe on the bundled sample with the embedded default model (offline, CPU). Extra args go to the CLI.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec fineinstructions demo --output "${OUTPUT:-out/demo}" "$@"
