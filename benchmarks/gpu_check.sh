#!/usr/bin/env bash
# GPU check, ready to run on a CUDA machine with no network: the CUDA-marked tests, then throughput at
# batch 512 for ResNet-18 (CIFAR stem, 32 px) and ResNet-50 (64 px), each with and without the affine
# module and against the peer-style pipeline on the same GPU; the chunks storage (nvJPEG decode, training
# img/s against the tensor storage). Writes OUT/summary.json and OUT/summary.md
# (plus each benchmark's own JSON and log). About 5-8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh [OUT]          # OUT defaults to $OUT, else gpu-check/
#
# Installs nothing from the network. affssl runs from this checkout (PYTHONPATH). Python packages the
# machine lacks (e.g. pydantic) can travel as wheels in .whl/ (see the device notes); they are installed
# offline into /tmp/site when present.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check}}
mkdir -p "$out"
out=$(cd "$out" && pwd)  # absolute: the benchmarks run from benchmarks/
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
missing=$(python3 - <<'PY'
import importlib.util
need = ["torch", "torchvision", "typer", "rich", "pydantic", "safetensors", "sklearn", "scipy", "matplotlib", "pytest"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [ -n "$missing" ]; then
  echo "gpu_check: missing Python packages: $missing; bring them as wheels in .whl/ (pip download --no-deps ...)" >&2
  exit 2
fi
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name())" \
  | tee "$out/device.txt" || exit 2

status=0
timeout 300 python3 -m pytest -q -m cuda tests/test_cuda.py tests/test_chunks.py -p no:cacheprovider 2>&1 \
  | tee "$out/tests.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

bench() {  # name, then the benchmark's arguments
  local name=$1; shift
  timeout 150 python3 "$@" --device cuda --json "$out/$name.json" > "$out/$name.md" 2> "$out/$name.err" \
    || { echo "gpu_check: $name failed (see $out/$name.err)" >&2; status=1; }
}
cd benchmarks
bench r18-throughput throughput.py --batch-size 512 --image-size 32 --repeats 5 --steps 20 --warmup 5
bench r50-throughput throughput.py --batch-size 512 --backbone resnet50 --image-size 64 --repeats 5 --steps 10 --warmup 3
for model in r18 r50; do
  [ $model = r18 ] && args="--image-size 32" || args="--backbone resnet50 --image-size 64"
  bench $model-peer peer_pipeline.py --batch-size 512 $args --workers 8 --repeats 3 --steps 10
  bench $model-peer-affine peer_pipeline.py --batch-size 512 $args --workers 8 --repeats 3 --steps 10 --affine
done
# The chunks storage (needs torchcodec and litdata): nvJPEG batch decode img/s, and training img/s from chunks
# against the tensor storage on 20,000 generated ~128 px JPEGs at 32 px (the folder is written once, here).
if python3 -c "import torchcodec, litdata" 2>/dev/null; then
  python3 chunks_write.py --make "$out/jpegs" --count 20000 --make-only || status=1
  timeout 420 python3 chunks_train.py --data "$out/jpegs" --cache "$out/cache" --device cuda --width 64 --image-size 32 \
    --batch-size 512 --steps 20 --repeats 3 --workers 8 --json "$out/chunks-train.json" > "$out/chunks-train.md" \
    2> "$out/chunks-train.err" || { echo "gpu_check: chunks-train failed (see $out/chunks-train.err)" >&2; status=1; }
  rm -rf "$out/jpegs" "$out/cache"
else
  echo "gpu_check: torchcodec or litdata missing: chunks storage not measured (bring them as wheels in .whl/)" >&2
fi
cd ..
python3 benchmarks/gpu_summary.py "$out" || status=1
exit $status
