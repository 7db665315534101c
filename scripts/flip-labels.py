#!/usr/bin/env python3
"""Copies an IDX dataset with a share of its labelled images' labels flipped to a random other
class (training and validation parts; the test part is copied unchanged), to measure how many
flips `warmstart audit` finds. Writes OUT/flips.csv beside the IDX files: file, index, true, given
(file is the images file, as audit's CSV names it).

Usage: scripts/flip-labels.py DATA_DIR OUT_DIR FRACTION SEED     e.g. data/fashion-1k /tmp/f1k-5 0.05 1
"""
import gzip, os, random, shutil, struct, sys

if len(sys.argv) != 5:
    sys.exit(__doc__)
src, out, fraction, seed = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

def read(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        b = f.read()
    n = b[3]
    return b[:4 + 4 * n], bytearray(b[4 + 4 * n:])

def find(prefix, kind):
    n = 3 if kind == "images" else 1
    for name in (f"{prefix}-{kind}-idx{n}-ubyte", f"{prefix}-{kind}-idx{n}-ubyte.gz"):
        if os.path.isfile(os.path.join(src, name)):
            return name
    return None

os.makedirs(out, exist_ok=True)
for name in os.listdir(src):
    if os.path.isfile(os.path.join(src, name)) and name not in ("SHA256SUMS",):
        shutil.copyfile(os.path.join(src, name), os.path.join(out, name))
parts = [p for p in ("train", "val") if find(p, "labels")]
labels = {p: read(os.path.join(src, find(p, "labels"))) for p in parts}
classes = 1 + max(max(l) for _, l in labels.values())
everyone = [(p, i) for p in parts for i in range(len(labels[p][1]))]
rng = random.Random(seed)
chosen = sorted(rng.sample(everyone, round(fraction * len(everyone))))
rows = []
for p, i in chosen:
    true = labels[p][1][i]
    given = rng.choice([c for c in range(classes) if c != true])
    labels[p][1][i] = given
    rows.append((os.path.abspath(os.path.join(out, find(p, "images"))), i, true, given))
for p in parts:
    name = find(p, "labels")
    head, body = labels[p]
    data = bytes(head) + bytes(body)
    path = os.path.join(out, name)
    if name.endswith(".gz"):
        with open(path, "wb") as f:
            f.write(gzip.compress(data, mtime=0))
    else:
        with open(path, "wb") as f:
            f.write(data)
with open(os.path.join(out, "flips.csv"), "w") as f:
    f.write("file,index,true,given\n")
    for r in rows:
        f.write("%s,%d,%d,%d\n" % r)
print(f"{out}: {len(rows)} of {len(everyone)} labels flipped (seed {seed})")
