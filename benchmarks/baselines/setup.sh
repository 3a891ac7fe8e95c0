#!/usr/bin/env bash
# Creates <repo>/.venv-bench (python3 -m venv) with the baseline tools in
# requirements.txt. Idempotent: does nothing while the stamp matches requirements.txt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.venv-bench"
reqs="$here/requirements.txt"
stamp="$venv/.requirements.stamp"

if [[ -f "$stamp" ]] && cmp -s "$reqs" "$stamp"; then
    echo "$venv is up to date"
    exit 0
fi

[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
cp "$reqs" "$stamp"
echo "$venv ready"
