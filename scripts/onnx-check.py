#!/usr/bin/env python3
"""Checks a warmstart ONNX export: the ONNX checker (full check), the metadata, and onnxruntime's
outputs for N images, written for the caller to compare with warmstart's own.

    onnx-check.py MODEL.onnx IMAGES.f32 N PROBS_OUT.f32

IMAGES.f32 holds N*784 little-endian float32 pixels (pixel/255, light on dark, as warmstart feeds
its network); PROBS_OUT.f32 receives N*classes float32 probabilities from the model's
`probabilities` output. Prints one JSON line: classes, output names, max |softmax(logits) - probs|.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main():
    model_path, images_path, n, out_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    classes = json.loads(meta["classes"])
    for key in ("warmstart_version", "input", "normalisation", "polarity", "fit"):
        assert key in meta, f"metadata_props lacks {key}"
    images = np.fromfile(images_path, dtype="<f4").reshape(n, 1, 28, 28)
    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    # Two batch sizes: the batch dimension is dynamic.
    logits, probs = session.run(["logits", "probabilities"], {"images": images})
    one = session.run(["probabilities"], {"images": images[:1]})[0]
    assert np.allclose(one, probs[:1], atol=1e-6), "batch of one differs"
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    softmax_gap = float(np.abs(e / e.sum(axis=1, keepdims=True) - probs).max())
    probs.astype("<f4").tofile(out_path)
    print(json.dumps({"classes": classes, "outputs": names, "softmax_gap": softmax_gap,
                      "onnxruntime": ort.__version__, "onnx": onnx.__version__}))


if __name__ == "__main__":
    main()
