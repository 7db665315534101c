#!/usr/bin/env python3
"""Builds the scarce study sets of docs/accuracy.md from the original MNIST and Fashion-MNIST files:

- fashion-300: the first 30 training images of each Fashion-MNIST class (300), the next 20 of each
  as validation (200), and the official 10,000 test images.
- fashion-50: the first 50 training images of each Fashion-MNIST class (500) with no validation
  set (warmstart holds out a stratified 10%, 50 images), and the official 10,000 test images.
- digits-1k: 100 digits of each class from MNIST's *test* file as training (1,000; the first in
  file order), the next 10 of each as validation (100), the remaining 8,900 as the test set. The
  default pretraining uses only MNIST's training file, so none of these digits is seen there.
- Unlabelled pools for `--unlabeled` (IDX directories; their labels are written beside the images
  only to measure the pseudo-labels, never trained on): fashion-pool, the Fashion-MNIST training
  images outside fashion-1k's training and validation sets (all but the first 150 of each class:
  58,500), which also excludes fashion-300's; fashion-pool-5k, its first 5,000; digits-pool,
  MNIST's training file (60,000; digits-1k comes from the test file).

Usage: scripts/make-study-sets.py DATA_DIR [OUT_DIR]   (DATA_DIR/mnist, DATA_DIR/fashion-mnist; OUT_DIR runs/study-data)
Writes gzip IDX files and classes.txt, deterministically (gzip without timestamp).
"""
import gzip, os, struct, sys

if len(sys.argv) < 2:
    sys.exit(__doc__)
src = sys.argv[1]
out = sys.argv[2] if len(sys.argv) > 2 else "runs/study-data"
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

def read(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    ndims = b[3]
    dims = struct.unpack(">" + "I" * ndims, b[4:4 + 4 * ndims])
    return dims, b[4 + 4 * ndims:]

def load(d, prefix):
    (n, h, w), px = read(os.path.join(d, f"{prefix}-images-idx3-ubyte.gz"))
    (m,), lb = read(os.path.join(d, f"{prefix}-labels-idx1-ubyte.gz"))
    assert n == m and h == w == 28
    return [px[i * 784:(i + 1) * 784] for i in range(n)], list(lb)

def write(d, prefix, images, labels):
    os.makedirs(d, exist_ok=True)
    for kind, dims, body in [("images-idx3", (len(images), 28, 28), b"".join(images)),
                             ("labels-idx1", (len(labels),), bytes(labels))]:
        head = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
        with open(os.path.join(d, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
            f.write(gzip.compress(head + body, mtime=0))

def per_class(images, labels, start, count):
    """Indices of images `start`..`start+count` of each class, in file order."""
    seen, keep = [0] * 10, []
    for i, l in enumerate(labels):
        if start <= seen[l] < start + count:
            keep.append(i)
        seen[l] += 1
    return keep

def subset(images, labels, idx):
    return [images[i] for i in idx], [labels[i] for i in idx]

fi, fl = load(os.path.join(src, "fashion-mnist"), "train")
ti, tl = load(os.path.join(src, "fashion-mnist"), "t10k")
d = os.path.join(out, "fashion-300")
write(d, "train", *subset(fi, fl, per_class(fi, fl, 0, 30)))
write(d, "val", *subset(fi, fl, per_class(fi, fl, 30, 20)))
write(d, "t10k", ti, tl)
open(os.path.join(d, "classes.txt"), "w").write("\n".join(FASHION) + "\n")
d = os.path.join(out, "fashion-50")
write(d, "train", *subset(fi, fl, per_class(fi, fl, 0, 50)))
write(d, "t10k", ti, tl)
open(os.path.join(d, "classes.txt"), "w").write("\n".join(FASHION) + "\n")

mi, ml = load(os.path.join(src, "mnist"), "t10k")
train = per_class(mi, ml, 0, 100)
val = per_class(mi, ml, 100, 10)
used = set(train) | set(val)
test = [i for i in range(len(ml)) if i not in used]
d = os.path.join(out, "digits-1k")
write(d, "train", *subset(mi, ml, train))
write(d, "val", *subset(mi, ml, val))
write(d, "t10k", *subset(mi, ml, test))
open(os.path.join(d, "classes.txt"), "w").write("\n".join(str(i) for i in range(10)) + "\n")
seen, rest = [0] * 10, []
for i, l in enumerate(fl):
    if seen[l] >= 150:
        rest.append(i)
    seen[l] += 1
write(os.path.join(out, "fashion-pool"), "train", *subset(fi, fl, rest))
write(os.path.join(out, "fashion-pool-5k"), "train", *subset(fi, fl, rest[:5000]))
write(os.path.join(out, "digits-pool"), "train", *load(os.path.join(src, "mnist"), "train"))
print(f"wrote {out}/fashion-pool ({len(rest)}), fashion-pool-5k (5000), digits-pool (60000)")
print(f"wrote {out}/fashion-300 (300 train / 200 val / 10000 test), {out}/fashion-50 (500 train / "
      f"10000 test) and {out}/digits-1k "
      f"(1000 train / 100 val / {len(test)} test)")
