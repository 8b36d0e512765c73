#!/usr/bin/env bash
# Run the test suite (CI calls this too). pytest's "no tests collected" (exit 5) counts as a failure.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
set +e
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then echo "error: pytest collected no tests" >&2; exit 1; fi
exit "$rc"
