#!/usr/bin/env python3
"""Simulated labelling with `warmstart suggest`: start from a few labels a class, then in each
round train, let a strategy pick the next images from the pool, and label them with the pool's
hidden labels (the oracle); print the test accuracy of each round as JSON lines.

Usage: scripts/simulate-labelling.py WARMSTART DATA POOL OUT STRATEGY SEED [--start 20] [--rounds 4]
           [--count 200] [--semi] [--diversity clusters|none] [-- TRAIN FLAGS...]

DATA: an IDX dataset whose training file's first images seed the labelled set (START a class, in
file order) and whose validation and test files are kept as they are (e.g. data/fashion-1k).
POOL: an IDX directory with train-images/train-labels (e.g. data/fashion-pool); its labels are
only read to answer for the picked images. STRATEGY: a `suggest --strategy` value. --semi trains
every round with `--unlabeled POOL`. Rounds write OUT/round-R/{data,run,suggest}.
"""
import gzip, json, os, struct, subprocess, sys

args = sys.argv[1:]
extra = args[args.index("--") + 1:] if "--" in args else []
args = args[:args.index("--")] if "--" in args else args
if len(args) < 6:
    sys.exit(__doc__)
ws, data, pool, out, strategy, seed = args[:6]
opts = {"--start": "20", "--rounds": "4", "--count": "200", "--diversity": "clusters"}
semi = "--semi" in args
rest = [a for a in args[6:] if a != "--semi"]
for k, v in zip(rest[::2], rest[1::2]):
    opts[k] = v

def read(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        b = f.read()
    n = b[3]
    dims = struct.unpack(">" + "I" * n, b[4:4 + 4 * n])
    return dims, b[4 + 4 * n:]

def find(d, prefix, kind):
    n = 3 if kind == "images" else 1
    for name in (f"{prefix}-{kind}-idx{n}-ubyte.gz", f"{prefix}-{kind}-idx{n}-ubyte"):
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)

def write(d, prefix, images, labels):
    os.makedirs(d, exist_ok=True)
    for kind, dims, body in [("images-idx3", (len(images), 28, 28), b"".join(images)),
                             ("labels-idx1", (len(labels),), bytes(labels))]:
        head = bytes([0, 0, 8, len(dims)]) + struct.pack(">" + "I" * len(dims), *dims)
        with open(os.path.join(d, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
            f.write(gzip.compress(head + body, mtime=0))

_, px = read(find(data, "train", "images"))
_, lb = read(find(data, "train", "labels"))
images = [px[i * 784:(i + 1) * 784] for i in range(len(lb))]
per_class, labelled_x, labelled_y = {}, [], []
for x, y in zip(images, lb):
    if per_class.get(y, 0) < int(opts["--start"]):
        per_class[y] = per_class.get(y, 0) + 1
        labelled_x.append(x)
        labelled_y.append(y)
_, pool_px = read(find(pool, "train", "images"))
_, pool_lb = read(find(pool, "train", "labels"))

def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    return r.stdout

for rnd in range(int(opts["--rounds"]) + 1):
    d = os.path.join(out, f"round-{rnd}")
    ddir = os.path.join(d, "data")
    write(ddir, "train", labelled_x, labelled_y)
    for prefix in ("val", "t10k"):
        for kind in ("images", "labels"):
            src = find(data, prefix, kind)
            if src:
                with open(src, "rb") as f, open(os.path.join(ddir, os.path.basename(src)), "wb") as g:
                    g.write(f.read())
    if os.path.isfile(os.path.join(data, "classes.txt")):
        with open(os.path.join(data, "classes.txt")) as f, open(os.path.join(ddir, "classes.txt"), "w") as g:
            g.write(f.read())
    rundir = os.path.join(d, "run")
    cmd = [ws, "train", "--data", ddir, "--out", rundir, "--seed", seed, "--overwrite"] + extra
    if semi:
        cmd += ["--unlabeled", pool]
    said = run(cmd)
    acc = [l for l in said.splitlines() if l.startswith("Test accuracy:")]
    print(json.dumps({"strategy": strategy, "semi": semi, "seed": int(seed), "round": rnd,
                      "labels": len(labelled_y), "test_acc": float(acc[-1].split()[2]) if acc else None}),
          flush=True)
    if rnd == int(opts["--rounds"]):
        break
    sdir = os.path.join(d, "suggest")
    run([ws, "suggest", "--model", rundir, "--unlabeled", pool, "--labelled", ddir, "--count", opts["--count"],
         "--strategy", strategy, "--diversity", opts["--diversity"], "--seed", seed, "--out", sdir, "--overwrite"])
    import csv
    for r in csv.DictReader(open(os.path.join(sdir, "suggested.csv"))):
        i = int(r["index"])
        labelled_x.append(pool_px[i * 784:(i + 1) * 784])
        labelled_y.append(pool_lb[i])
