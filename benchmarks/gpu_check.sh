#!/usr/bin/env bash
# The GPU check of issue 3, as one command for a lent device machine (see benchmarks/README.md).
# There, python3 has torch with CUDA, numpy, scikit-learn, pandas, tqdm and pytest, but not the
# MNIST package: MNIST travels as .gpu/mnist.npz (made here, carried). Output goes to $OUT.
set -euo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
out=${OUT:-.gpu}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -m "slow or not slow" tests/test_engine.py -k cuda \
    2>&1 | tee "$out/tests.txt"
python3 benchmarks/bench_training.py --device cuda --only mnist --mnist .gpu/mnist.npz \
    --models 256 --plain-models 4 --precisions fp32 bf16 2>&1 | tee "$out/bench.txt"
