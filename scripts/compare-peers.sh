#!/usr/bin/env bash
# Side-by-side speed comparison of warmstart with the Keras and PyTorch peers of the same pipeline
# (../shared/bench/peers/), on this machine, with the same thread count. Not part of CI.
#
# Setup once (several GB):
#   python3 -m venv /tmp/peers-venv
#   /tmp/peers-venv/bin/pip install torch torchvision tensorflow-cpu numpy matplotlib scipy
#
# Usage: scripts/compare-peers.sh [THREADS]      (PY=/path/to/python, PEERS=/path/to/peers)
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-2}
PY=${PY:-/tmp/peers-venv/bin/python}
PEERS=${PEERS:-../shared/bench/peers}
OUT=$(mktemp -d)

cargo build --release --quiet
echo "== warmstart bench --threads $THREADS"
target/release/warmstart bench --threads "$THREADS" | tee "$OUT/warmstart.txt"

# The first number after the colon of the first line matching $2 in file $1.
fig() { grep -m1 "$2" "$1" | sed 's/^[^:]*://' | grep -oE '[0-9]+(\.[0-9]+)?' | head -1; }

peer() { # name script
  local name=$1 script=$2
  echo "== $name"
  "$PY" "$PEERS/$script" --stage pretrain --epochs 1 --max-batches 60 --threads "$THREADS" \
    --init random --out "$OUT/$name-pre" > "$OUT/$name-b128.txt" 2>&1 || { echo "$name failed: see $OUT/$name-b128.txt"; return 1; }
  "$PY" "$PEERS/$script" --stage small --epochs 1 --max-batches 30 --threads "$THREADS" \
    --init random --out "$OUT/$name-small" > "$OUT/$name-b32.txt" 2>&1 || { echo "$name failed: see $OUT/$name-b32.txt"; return 1; }
  echo "train_b128: $(fig "$OUT/$name-b128.txt" 'Train throughput') images/s"
  echo "train_b32_aug: $(fig "$OUT/$name-b32.txt" 'Train throughput') images/s"
  echo "infer_b1000: $(fig "$OUT/$name-b128.txt" 'Inference throughput') images/s"
}

peer keras keras_seed.py | tee "$OUT/keras.txt"
peer torch torch_seed.py | tee "$OUT/torch.txt"

echo
echo "== warmstart / best peer (threads: $THREADS)"
for k in train_b128 train_b32_aug infer_b1000; do
  w=$(fig "$OUT/warmstart.txt" "^$k:"); ke=$(fig "$OUT/keras.txt" "^$k:" || true); to=$(fig "$OUT/torch.txt" "^$k:" || true)
  python3 -c "
w, k, t = float('$w'), float('${ke:-0}' or 0), float('${to:-0}' or 0)
best = max(k, t)
print(f'$k: warmstart {w:.0f}, keras {k:.0f}, pytorch {t:.0f} images/s; ratio to the better peer: ' + (f'{w/best:.2f}x' if best else 'n/a'))"
done
echo "(raw outputs in $OUT)"
