#!/usr/bin/env bash
# Refresh docs/images from the screenshots the browser tests take.
#
# The browser tests (pytest -m browser) save every face they drive to test-artifacts/screenshots/;
# the docs show copies of them from docs/images/. This runs the browser tests and copies each image
# the docs use (and only those) over its old copy. tests/test_doc_images.py checks that every image
# the docs reference exists here and is one a test takes.
#
#   bash scripts/update-doc-screenshots.sh            # run the browser tests, then copy
#   bash scripts/update-doc-screenshots.sh --no-run   # copy what the last test run left
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--no-run" ]]; then
    python -m pytest -m browser -q -p no:cacheprovider
fi
shots=test-artifacts/screenshots
copied=0
for name in $(grep -rhoE 'images/[A-Za-z0-9_.-]+\.png' docs | sed 's#images/##' | sort -u); do
    if [[ -f "$shots/$name" ]]; then
        cp "$shots/$name" "docs/images/$name"
        copied=$((copied + 1))
    else
        echo "warning: docs use images/$name but no test saved $shots/$name" >&2
    fi
done
echo "copied $copied screenshots into docs/images"
