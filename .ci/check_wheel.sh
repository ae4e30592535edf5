#!/usr/bin/env bash
# The path a user takes without the Makefile: build the wheel, install it with every extra into a
# fresh venv (torch first: the CPU build on this machine's disk), run `mutransfer demo --quick`.
# Not part of CI (it installs transformers & co. and trains for minutes); run it before a release.
set -e
cd /work/main
rm -rf /tmp/wheelcheck && mkdir -p /tmp/wheelcheck
.venv/bin/pip wheel -q --no-deps . -w /tmp/wheelcheck/dist 2>&1 | grep -v ignored || true
python3 -m venv /tmp/wheelcheck/venv
/tmp/wheelcheck/venv/bin/pip install -q --upgrade pip 2>&1 | grep -v ignored || true
/tmp/wheelcheck/venv/bin/pip install -q torch==2.13.0 2>&1 | grep -v ignored || true
/tmp/wheelcheck/venv/bin/pip install -q "$(ls /tmp/wheelcheck/dist/mutransfer-*.whl)[all]" 2>&1 | grep -v ignored || true
cd /tmp/wheelcheck && /usr/bin/time -v venv/bin/mutransfer demo --quick --out /tmp/wheelcheck/demo 2>&1 | tail -40
