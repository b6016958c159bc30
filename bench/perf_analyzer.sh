#!/usr/bin/env bash
# Triton's perf_analyzer driving infaas over HTTP and gRPC, at a few concurrencies.
#
#   bash bench/perf_analyzer.sh                 # starts its own infaas (digits zoo) on free ports
#   INFAAS_HTTP=127.0.0.1:8000 INFAAS_GRPC=127.0.0.1:8001 bash bench/perf_analyzer.sh   # a running one
#
# perf_analyzer ships in tritonclient==2.50.0's manylinux1 wheel (later wheels dropped it). It needs
# libb64 (Debian's libb64-0d) and libcudart.so.12 (the nvidia-cuda-runtime-cu12 wheel; no GPU is
# used). All three are unpacked into a folder of their own ($PA_DIR, default .cache/perf_analyzer),
# never into the project's environment. Output: perf_analyzer's own tables, and a summary in
# bench/results/perf_analyzer.txt. Env: MODELS (default "digits-mlp digits-classification"),
# CONCURRENCY (default 1:8:3 = 1,4,7), WINDOW_MS (default 3000), PYTHON (default .venv/bin/python),
# SHM (default "none system": each protocol plain, then with `--shared-memory system`, where
# perf_analyzer puts every input and output in system shared-memory regions it registers),
# PROTOCOLS (default "http grpc"), STABILITY (default 10: perf_analyzer's --stability-percentage).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PA_DIR="${PA_DIR:-$ROOT/.cache/perf_analyzer}"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MODELS="${MODELS:-digits-mlp digits-classification}"
CONCURRENCY="${CONCURRENCY:-1:8:3}"
WINDOW_MS="${WINDOW_MS:-3000}"
SHM="${SHM:-none system}"
PROTOCOLS="${PROTOCOLS:-http grpc}"
STABILITY="${STABILITY:-10}"
OUT="$ROOT/bench/results/perf_analyzer.txt"
mkdir -p "$PA_DIR" "$ROOT/bench/results"

# ---- perf_analyzer and its two libraries, in $PA_DIR -------------------------------------------
PA="$PA_DIR/tritonclient/tritonclient-2.50.0.data/data/bin/perf_analyzer"
if [ ! -x "$PA" ]; then
  echo "fetching perf_analyzer (tritonclient 2.50.0 wheel) into $PA_DIR" >&2
  "$PYTHON" -m pip download -q --no-deps --only-binary :all: --platform manylinux1_x86_64 \
      --python-version 3.11 tritonclient==2.50.0 -d "$PA_DIR/wheels"
  "$PYTHON" -m zipfile -e "$PA_DIR"/wheels/tritonclient-2.50.0-*.whl "$PA_DIR/tritonclient"
  chmod +x "$PA"
fi
CUDART_DIR="$PA_DIR/cudart/nvidia/cuda_runtime/lib"
if [ ! -e "$CUDART_DIR/libcudart.so.12" ]; then
  echo "fetching libcudart.so.12 (nvidia-cuda-runtime-cu12 wheel) into $PA_DIR" >&2
  "$PYTHON" -m pip download -q --no-deps --only-binary :all: --platform manylinux2014_x86_64 \
      --python-version 3.11 "nvidia-cuda-runtime-cu12>=12,<13" -d "$PA_DIR/wheels"
  "$PYTHON" -m zipfile -e "$(ls "$PA_DIR"/wheels/nvidia_cuda_runtime_cu12-*.whl | head -1)" "$PA_DIR/cudart"
fi
B64_DIR="$PA_DIR/libb64/usr/lib/x86_64-linux-gnu"
if [ ! -e "$B64_DIR/libb64.so.0d" ]; then
  echo "fetching libb64-0d (Debian package, unpacked, not installed) into $PA_DIR" >&2
  (cd "$PA_DIR" && { apt-get download libb64-0d 2>/dev/null || { apt-get update -qq && apt-get download libb64-0d; }; })
  dpkg -x "$(ls "$PA_DIR"/libb64-0d_*.deb | head -1)" "$PA_DIR/libb64"
fi
export LD_LIBRARY_PATH="$B64_DIR:$CUDART_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# ---- an infaas to drive ---------------------------------------------------------------------------
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null; [ -n "${DATA:-}" ] && rm -rf "$DATA"; true; }
trap cleanup EXIT
if [ -z "${INFAAS_HTTP:-}" ]; then
  DATA="$(mktemp -d)"
  read -r HTTP_PORT GRPC_PORT < <("$PYTHON" -c "from infaas.app import free_port as f; print(f(), f())")
  echo "starting infaas (digits zoo) on 127.0.0.1:$HTTP_PORT (HTTP) and :$GRPC_PORT (gRPC)" >&2
  "$PYTHON" -m infaas.cli zoo add digits --data-dir "$DATA" --no-wait >/dev/null
  INFAAS_AUTOSCALE=false "$PYTHON" -m infaas.cli serve --data-dir "$DATA" --port "$HTTP_PORT" \
      --grpc-port "$GRPC_PORT" 2>"$DATA/server.log" &
  SERVER_PID=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HTTP_PORT/v2/health/ready" >/dev/null && break; sleep 0.2; done
  INFAAS_HTTP="127.0.0.1:$HTTP_PORT"
  INFAAS_GRPC="127.0.0.1:$GRPC_PORT"
fi

# ---- perf_analyzer, both protocols ---------------------------------------------------------------
{
  echo "# perf_analyzer (tritonclient 2.50.0) against infaas, $(date -u +%F), $(nproc) cores"
  printf "%-24s %-9s %11s %12s %10s %10s\n" model proto concurrency "infer/sec" "p50 usec" "p99 usec"
} >"$OUT"
for model in $MODELS; do
  for proto in $PROTOCOLS; do
   for shm in $SHM; do
    url="$INFAAS_HTTP"; [ "$proto" = grpc ] && url="${INFAAS_GRPC:?set INFAAS_GRPC for a running server}"
    label="$proto"; [ "$shm" = system ] && label="$proto+shm"
    csv="$(mktemp)"
    echo "=== perf_analyzer -m $model -i $proto -u $url --concurrency-range $CONCURRENCY --shared-memory $shm" >&2
    "$PA" -m "$model" -i "$proto" -u "$url" --concurrency-range "$CONCURRENCY" --shared-memory "$shm" \
        --stability-percentage "$STABILITY" --measurement-interval "$WINDOW_MS" --percentile 99 -f "$csv"
    # CSV columns: Concurrency, Inferences/Second, ..., p50 latency, ..., p99 latency
    "$PYTHON" - "$csv" "$model" "$label" >>"$OUT" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for r in sorted(rows, key=lambda r: int(r["Concurrency"])):
    print(f"{sys.argv[2]:<24} {sys.argv[3]:<9} {r['Concurrency']:>11} {float(r['Inferences/Second']):>12.1f} "
          f"{r['p50 latency']:>10} {r['p99 latency']:>10}")
PY
    rm -f "$csv"
   done
  done
done
echo >&2
cat "$OUT"
