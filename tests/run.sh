#!/usr/bin/env bash
# Sets up the test environment in .venv/ (reused when complete) and runs the suite.
# Usage: tests/run.sh [pytest args...]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.venv"
stamp="$venv/.fabric-env-$(cat tests/requirements.txt tests/constraints.txt tests/run.sh | sha256sum | cut -c1-16)"

if [ ! -f "$stamp" ]; then
    command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
    rm -rf "$venv"
    uv venv --quiet --python python3 "$venv"
    # --find-links: the CPU torch wheel lies in /opt/wheels on the project machines.
    uv pip install --quiet --python "$venv/bin/python" --find-links /opt/wheels \
        -c tests/constraints.txt -r tests/requirements.txt
    uv pip install --quiet --python "$venv/bin/python" --no-deps stable-diffusion-sdkit imaginAIry
    touch "$stamp"
fi
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null) \
        || echo "chromium could not be installed; browser tests will be skipped"
fi
exec "$venv/bin/python" -m pytest "$@"
