#!/usr/bin/env bash
# Set up (first time) and run the test suite: bash scripts/test.sh [pytest args]
source "$(dirname "$0")/setup.sh"
set +e
python -m pytest -q -p no:cacheprovider "$@"
rc=$?
[ $rc -eq 5 ] && { echo "no tests were collected"; exit 1; }
exit $rc
