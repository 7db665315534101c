#!/usr/bin/env python3
"""Runs a peer benchmark (a Keras or PyTorch script of the pipeline) in its framework's own bf16 mode, unchanged
otherwise, so that warmstart's bf16 figures meet a fair comparison (scripts/compare-peers.sh).

    peer-bf16.py torch|keras PEERS_DIR [the peer script's flags...]

- torch: the whole run inside `torch.autocast("cpu", dtype=torch.bfloat16)` (PyTorch's CPU mixed
  precision: convolutions and matrix multiplies in bf16 through oneDNN, weights and optimizer f32).
- keras: `keras.mixed_precision.set_global_policy("mixed_bfloat16")` before the model is built
  (bf16 compute, f32 variables).
"""
import sys


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in ("torch", "keras"):
        sys.exit(__doc__)
    which, peers, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.path.insert(0, peers)
    # The peer scripts parse their flags when imported.
    sys.argv = [f"{which}_seed.py"] + rest
    if which == "torch":
        import torch
        import torch_seed

        print("precision: torch.autocast cpu bfloat16")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch_seed.main()
    else:
        import keras_seed
        import keras

        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        print("precision: keras mixed_bfloat16")
        keras_seed.main()


if __name__ == "__main__":
    main()
