#!/usr/bin/env bash
# Everything a session with an NVIDIA GPU should run, in one go, results under one folder:
#   1. the GPU test suite, un-simulated (every kernel against its CPU twin, real compilation)
#   2. benchmarks/bench_gpu.py: our kernels against PyTorch on the same GPU (CUDA events),
#      and the launch shapes swept (each checked against the default shape)
#   3. emd bench on CPU and GPU: the paper's Table 1 workload, kernels and copies split
#   4. emd compute --device cuda --verbose on the sample data: where the time goes end to end,
#      and on 100 000 × 1000 rows on the CPU and the GPU (results compared): the default
#      --device is switched to auto only when the GPU wins there
# Usage: bash benchmarks/gpu_session.sh [OUT_DIR]   (default: gpu_results/)
# Each step's output goes to OUT_DIR/<step>.txt (8 files, nothing else); a failing step does
# not stop the others, and the exit status is that of the first failure.
#
# Through the device tool (whose numpy 2.5 breaks numba.cuda: carry numpy 2.4), once here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl 'numpy==2.4.*'
# then one run, carry [".whl"]:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
#   export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_session.sh "$OUT"
set -u
out="${1:-gpu_results}"
mkdir -p "$out"
py="${PYTHON:-python3}"
status=0
step() {
    local name="$1"; shift
    {
        echo "== $name: $*"
        "$@" 2>&1 || { echo "== $name FAILED"; [ "$status" -eq 0 ] && status=1; }
    } > "$out/$name.txt"
    tail -n 40 "$out/$name.txt"
}
step env "$py" -c "import numpy, numba, numba.cuda as c; print(numpy.__version__, numba.__version__); c.detect()"
step tests env EMDCLI_TEST_CUDA=real "$py" -m pytest -q tests/test_gpu.py
step bench_gpu "$py" benchmarks/bench_gpu.py
step emd_bench "$py" -m emdcli bench --device cpu,cuda --repeat 5
big=$(mktemp -d)
step compute "$py" -m emdcli compute sample_data/signal.parquet --target-column level \
    --metric emd2 --device cuda --verbose -o "$big/signal_emd2.parquet"
# end to end, CPU against GPU, on a batch big enough to decide the default --device:
# 100 000 float32 rows of 1000 bins with class targets, EMD² and gradients
"$py" -c "import numpy as np, sys; r = np.random.default_rng(0); \
np.save(sys.argv[1] + '/p.npy', r.random((100_000, 1000), dtype=np.float32)); \
np.save(sys.argv[1] + '/c.npy', r.integers(0, 1000, 100_000))" "$big"
for dev in cpu cuda; do
    step "compute_$dev" "$py" -m emdcli compute "$big/p.npy" "$big/c.npy" --metric emd2 \
        --dtype float32 --device "$dev" --gradient "$big/g_$dev.npy" -o "$big/v_$dev.npy" --verbose
done
step compute_agree "$py" -c "import numpy as np, sys; d = sys.argv[1]; \
[np.testing.assert_allclose(np.load(f'{d}/{k}_cuda.npy'), np.load(f'{d}/{k}_cpu.npy'), \
rtol=1e-4, atol=1e-6) for k in 'vg']; print('cpu and cuda agree')" "$big"
rm -rf "$big"
exit "$status"
