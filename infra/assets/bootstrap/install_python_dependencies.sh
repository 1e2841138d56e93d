#!/bin/bash
# EMR bootstrap action: install the job's pinned Python dependencies for the
# cluster's Python from the wheels of one job artifact version. Runs on every
# node before Spark starts. No package index is contacted: pip runs with
# --no-index from the wheels, and pip itself runs from the bundled pip wheel.
#
# Usage: install_python_dependencies.sh ARTIFACT_URI
#   ARTIFACT_URI  the artifact version's s3:// prefix, or a local directory
# Environment:
#   CLUSTER_PYTHON  interpreter to install into (default /usr/bin/python3.11)
#   INSTALL_SUDO    command prefix for the install (default sudo; empty for none)
set -euo pipefail

artifact=${1:?usage: $0 ARTIFACT_URI}
artifact=${artifact%/}
python=${CLUSTER_PYTHON:-/usr/bin/python3.11}
sudo=${INSTALL_SUDO-sudo}

if [ ! -x "$python" ]; then
    echo "error: $python not found; the jobs need the Python 3.11 that EMR 7 releases install" >&2
    exit 1
fi

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

echo "copying wheels from $artifact"
if [[ "$artifact" == s3://* ]]; then
    aws s3 cp --recursive --only-show-errors "$artifact/wheels/" "$workdir/wheels/"
    aws s3 cp --only-show-errors "$artifact/requirements.txt" "$workdir/requirements.txt"
else
    cp -R "$artifact/wheels" "$workdir/wheels"
    cp "$artifact/requirements.txt" "$workdir/requirements.txt"
fi

pip_wheels=("$workdir"/wheels/pip-*.whl)
if [ ! -f "${pip_wheels[0]}" ]; then
    echo "error: no pip wheel in $artifact/wheels; rebuild the artifact" >&2
    exit 1
fi

# PIP_CONFIG_FILE=/dev/null makes pip ignore any pip.conf on the node, and the
# other PIP_* variables are cleared, so no index, link or constraint configured
# on the node can change what gets installed.
while read -r variable; do
    unset "$variable"
done < <(compgen -e | grep '^PIP_' || true)
# --break-system-packages lets the install proceed should the distribution mark
# its Python as externally managed (PEP 668). Without that mark it has no effect.
$sudo env PIP_CONFIG_FILE=/dev/null "$python" "${pip_wheels[0]}/pip" install \
    --no-index \
    --find-links "$workdir/wheels" \
    --require-hashes \
    --only-binary :all: \
    --no-cache-dir \
    --disable-pip-version-check \
    --no-warn-script-location \
    --break-system-packages \
    --requirement "$workdir/requirements.txt"

"$python" -c 'import matplotlib, numpy; print("installed numpy", numpy.__version__, "and matplotlib", matplotlib.__version__)'
