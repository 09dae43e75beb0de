#!/usr/bin/env bash
# The declared floors, installed together: pyproject's lowest allowed version of every direct dependency
# (uv's --resolution lowest-direct), then the Quickstart's main job and a fast subset of the tests.
#
#   bash benchmarks/floors.sh [VENV]      # default VENV: /tmp/affssl-floors; prints the versions it tested
#
# Needs uv (pip install uv) and the package registry: uv downloads torch's PyPI build (several GB with its
# CUDA libraries; it runs on the CPU). The test tools (pytest, hypothesis) are installed at their latest:
# the floors under test are the runtime's. Exit code 0: the floors hold.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-/tmp/affssl-floors}
rm -rf "$venv"
uv venv -q -p python3.11 "$venv"
. "$venv/bin/activate"
uv pip install -q --resolution lowest-direct .
uv pip install -q pytest hypothesis
python - <<'EOF'
from importlib.metadata import version
names = ["torch", "torchvision", "torchcodec", "typer", "rich", "pydantic", "safetensors", "scikit-learn", "scipy",
         "numpy", "pillow", "matplotlib", "threadpoolctl", "tomli-w"]
print("floors under test: " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
work=$(mktemp -d)
(cd "$work" && affssl pretrain --no-progress --out runs/quickstart && affssl eval linear runs/quickstart/last.safetensors)
python -m pytest -q -x -p no:cacheprovider tests/test_spec.py tests/test_affine.py tests/test_augment.py \
    tests/test_methods.py tests/test_decode.py tests/test_cli.py tests/test_export.py tests/test_tensor_path_pinned.py
rm -rf "$work"
echo "floors hold"
