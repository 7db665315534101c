#!/usr/bin/env bash
# Side-by-side speed comparison of warmstart with the Keras and PyTorch peers of the same pipeline
# (their scripts in the directory PEERS), on this machine, with the same thread count. Not part
# of CI.
#
# Setup once (several GB):
#   python3 -m venv /tmp/peers-venv
#   /tmp/peers-venv/bin/pip install torch torchvision tensorflow-cpu numpy matplotlib scipy
#
# Usage: scripts/compare-peers.sh [THREADS]      (PY=/path/to/python, PEERS=/path/to/peers)
#
# warmstart's `bench` measures fp32 and, where the CPU has AVX512_BF16, bf16 (`*_bf16` lines);
# each peer runs in its default f32 and in its own bf16 mode (torch.autocast / Keras
# mixed_bfloat16, scripts/peer-bf16.py).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
PY=${PY:-/tmp/peers-venv/bin/python}
PEERS=${PEERS:?set PEERS to the directory of the Keras and PyTorch peer scripts}
OUT=$(mktemp -d)

cargo build --release --quiet
echo "== warmstart bench --threads $THREADS"
target/release/warmstart bench --threads "$THREADS" | tee "$OUT/warmstart.txt"

# The first number after the colon of the first line matching $2 in file $1.
fig() { grep -m1 "$2" "$1" | sed 's/^[^:]*://' | grep -oE '[0-9]+(\.[0-9]+)?' | head -1; }

peer() { # name script [runner...]: the peer's figures, each line tagged with $TAG
  local name=$1 script=$2; shift 2
  local run=("$@"); [ ${#run[@]} -eq 0 ] && run=("$PY" "$PEERS/$script")
  echo "== $name"
  "${run[@]}" --stage pretrain --epochs 1 --max-batches 60 --threads "$THREADS" \
    --init random --out "$OUT/$name-pre" > "$OUT/$name-b128.txt" 2>&1 || { echo "$name failed: see $OUT/$name-b128.txt"; return 1; }
  "${run[@]}" --stage small --epochs 1 --max-batches 30 --threads "$THREADS" \
    --init random --out "$OUT/$name-small" > "$OUT/$name-b32.txt" 2>&1 || { echo "$name failed: see $OUT/$name-b32.txt"; return 1; }
  echo "train_b128: $(fig "$OUT/$name-b128.txt" 'Train throughput') images/s"
  echo "train_b32_aug: $(fig "$OUT/$name-b32.txt" 'Train throughput') images/s"
  echo "infer_b1000: $(fig "$OUT/$name-b128.txt" 'Inference throughput') images/s"
}

# Each peer in its default f32 and in its own bf16 mode (scripts/peer-bf16.py).
BF16=("$PY" scripts/peer-bf16.py)
peer keras keras_seed.py | tee "$OUT/keras.txt"
peer keras-bf16 keras_seed.py "${BF16[@]}" keras "$PEERS" | tee "$OUT/keras-bf16.txt"
peer torch torch_seed.py | tee "$OUT/torch.txt"
peer torch-bf16 torch_seed.py "${BF16[@]}" torch "$PEERS" | tee "$OUT/torch-bf16.txt"

echo
echo "== warmstart against the better peer (threads: $THREADS; $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'))"
table() { # warmstart-suffix peer-suffix label
  for k in train_b128 train_b32_aug infer_b1000; do
    w=$(fig "$OUT/warmstart.txt" "^$k$1:" || true)
    ke=$(fig "$OUT/keras$2.txt" "^$k:" || true); to=$(fig "$OUT/torch$2.txt" "^$k:" || true)
    [ -z "$w" ] && continue
    python3 -c "
w, k, t = float('$w'), float('${ke:-0}' or 0), float('${to:-0}' or 0)
best = max(k, t)
print(f'$3 $k: warmstart {w:.0f}, keras {k:.0f}, pytorch {t:.0f} images/s; ratio to the better peer: ' + (f'{w/best:.2f}x' if best else 'n/a'))"
  done
}
table "" "" "fp32 vs fp32:"
table "_bf16" "" "warmstart bf16 vs peers fp32:"
table "_bf16" "-bf16" "bf16 vs bf16:"
echo "(raw outputs in $OUT)"
