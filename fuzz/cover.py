#!/usr/bin/env python3
# Shrinks a fuzz corpus to at most CAP files (docs/fuzzing.md, "Shrinking").
# Usage: python3 cover.py CONTROL_FILE OUT_DIR CAP, run in fuzz/, where
# CONTROL_FILE is from a libFuzzer merge with -merge_control_file (it lists
# every input and the edges it covers).
#
# Greedy set cover: the seeds (files not named by their SHA-1) first, then
# the file adding most new edges (the smaller on a tie), until every edge is
# covered or CAP files are chosen.
import sys, os, shutil, hashlib
ctl, out, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
lines = open(ctl).read().split("\n")
n = int(lines[0]); paths = lines[2:2+n]
cov = {}
for l in lines[2+n:]:
    p = l.split()
    if p and p[0] == "COV":
        cov[int(p[1])] = set(p[2:])
allcov = set().union(*cov.values())
seeds = [i for i, p in enumerate(paths) if not all(c in "0123456789abcdef" for c in os.path.basename(p)) or len(os.path.basename(p)) != 40]
chosen = list(seeds); covered = set().union(*(cov.get(i, set()) for i in seeds))
rest = {i: cov.get(i, set()) for i in range(n) if i not in seeds}
while len(chosen) < cap:
    best = max(rest, key=lambda i: (len(rest[i] - covered), -os.path.getsize(paths[i])), default=None)
    if best is None or not (rest[best] - covered): break
    covered |= rest.pop(best); chosen.append(best)
os.makedirs(out, exist_ok=True)
for i in chosen:
    p = paths[i]; name = os.path.basename(p)
    if i not in seeds: name = hashlib.sha1(open(p, "rb").read()).hexdigest()
    shutil.copyfile(p, os.path.join(out, name))
print(f"{len(chosen)} files ({len(seeds)} seeds) cover {len(covered)} of {len(allcov)} edges ({100*len(covered)/len(allcov):.1f}%)")
