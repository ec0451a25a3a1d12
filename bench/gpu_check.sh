#!/usr/bin/env bash
# Every GPU figure of docs/benchmarks.md (section 4) plus the CUDA-graph-vs-eager checks, in one run
# on a CUDA machine (< 8 min on an H200). Writes JSON into $OUT (default ./gpu-results):
#   gpu_direct.json  model level, in-process: act b=1 / b=64, TTFT 640x480, tokens/s over 32
#                    streams, torch.cuda.max_memory_allocated, graph-vs-eager text/box equality,
#                    vtla_checks (VTLA graph replay vs eager, every shape warmed/captured),
#                    admission (8 captions batched vs one at a time: forwards, time; device-side
#                    crop resize vs libvips/Pillow and its TTFT), act_during_decode (act latency
#                    with a launched decode step in flight vs idle: the high-priority act stream)
#   gpu_tests.log    the CUDA-marked tests (tests/models/vtla/test_gpu.py, test_cuda_graphs.py,
#                    tests/models/moondream/test_decode_cuda.py, test_cuda_admission.py)
#   bench/           `vtla-bridge bench gpu`: the same figures through the real server and clients
#   transport/       issue 14 item 5 on a server host that is not this project's nested-VM CPU box:
#                    one client's act overhead vs a pyzmq echo pausing as long as the flat 5 ms
#                    policy, and vs openpi's server when openpi-client is importable
#   summary.json     exit status of each part
# Usage: bash bench/gpu_check.sh            (PYTHONPATH is set to this checkout)
# The four timeouts sum to 530 s: the whole script stays under 9 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-$PWD/gpu-results}"
mkdir -p "$OUT"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" \
  || { echo '{"status": "no-cuda"}' > "$OUT/summary.json"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia_smi.csv" 2>&1 || true

start_s=$SECONDS
timeout 240 python -m bench.gpu_direct --out "$OUT/gpu_direct.json" > "$OUT/gpu_direct.log" 2>&1
direct_rc=$?
echo "gpu_direct rc=$direct_rc ($((SECONDS - start_s)) s)"

timeout 90 python -m pytest -q -p no:cacheprovider -m gpu tests/models > "$OUT/gpu_tests.log" 2>&1
tests_rc=$?
echo "gpu tests rc=$tests_rc ($((SECONDS - start_s)) s)"

timeout 140 python -m bench gpu --quick --out "$OUT/bench" > "$OUT/bench_gpu.log" 2>&1
bench_rc=$?
echo "bench gpu rc=$bench_rc ($((SECONDS - start_s)) s)"

timeout 60 python -m bench transport --iters 300 --transport-sizes 224x224 --no-progress \
  --transport-variants zmq_echo,zmq_echo_flat,bridge_null,bridge_flat,openpi_flat \
  --out "$OUT/transport" > "$OUT/transport.log" 2>&1
transport_rc=$?
echo "bench transport rc=$transport_rc ($((SECONDS - start_s)) s)"

printf '{"gpu_direct_rc": %d, "gpu_tests_rc": %d, "bench_gpu_rc": %d, "transport_rc": %d, "elapsed_s": %d}\n' \
  "$direct_rc" "$tests_rc" "$bench_rc" "$transport_rc" "$((SECONDS - start_s))" > "$OUT/summary.json"
cat "$OUT/summary.json"
[ "$direct_rc" -eq 0 ] && [ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ] && [ "$transport_rc" -eq 0 ]
