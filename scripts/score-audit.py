#!/usr/bin/env python3
"""Scores `warmstart audit` against the flips of scripts/flip-labels.py: with k flipped labels,
the precision among the first k rows of label_issues.csv, the share of flips within its first 2k
rows, and how many rows it has. One line of JSON.

Usage: scripts/score-audit.py FLIPPED_DATA_DIR AUDIT_DIR
"""
import csv, json, os, sys

if len(sys.argv) != 3:
    sys.exit(__doc__)
flips = {(os.path.abspath(r["file"]), int(r["index"])) for r in csv.DictReader(open(os.path.join(sys.argv[1], "flips.csv")))}
rows = [(os.path.abspath(r["file"]), int(r["index"])) for r in csv.DictReader(open(os.path.join(sys.argv[2], "label_issues.csv")))]
k = len(flips)
top_k = rows[:k]
hits_k = sum(r in flips for r in top_k)
hits_2k = sum(r in flips for r in rows[:2 * k])
print(json.dumps({
    "flips": k,
    "flagged": len(rows),
    "precision_top_k": round(hits_k / max(len(top_k), 1), 4),
    "recall_top_2k": round(hits_2k / max(k, 1), 4),
    "flips_flagged": round(sum(r in flips for r in rows) / max(k, 1), 4),
}))
