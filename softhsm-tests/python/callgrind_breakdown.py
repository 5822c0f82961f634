#!/usr/bin/env python3
"""Instructions per sign-in of a `symbolon serve` callgrind profile (scripts/profile-signin).

Reads the callgrind file's self costs (a cost line right after `calls=` is the callee's
inclusive cost and is skipped), groups them by shared object and, inside the server
binary, by the crate a function belongs to, and divides by the sign-ins the profile
holds: the calls to `ParsedJws::verify`, of which a sign-in makes two (the phone's
pending list and its verify; docs/protocol.md §5), unless --signins says otherwise.

Usage: callgrind_breakdown.py FILE [--signins N] [--top N] [--functions OBJECT_PART]
"""

import argparse
import collections
import re

NAMED = re.compile(r"\((\d+)\)(?: (.*))?")


def read(path):
    """Self cost per (object, function) and the calls made to each function."""
    names = {"fn": {}, "ob": {}}
    self_cost = collections.Counter()
    calls = collections.Counter()
    fn = ob = callee = program = "?"
    after_calls = False

    def name(kind, rest):
        m = NAMED.match(rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line[0].isdigit() or line[0] in "+-*":
                if after_calls:
                    after_calls = False
                else:
                    self_cost[(ob, fn)] += int(line.split()[-1])
                continue
            if line.startswith("cmd: "):
                program = line.split()[1]
                continue
            key, _, rest = line.partition("=")
            if key == "fn":
                fn = name("fn", rest)
            elif key == "ob":
                ob = name("ob", rest)
            elif key == "cfn":
                callee = name("fn", rest)
            elif key == "cob":
                name("ob", rest)
            elif key == "calls":
                calls[callee] += int(rest.split()[0])
                after_calls = True
    return self_cost, calls, program


def group(obj, function, server):
    """Where an instruction counts: a shared object, or a crate of the server."""
    if obj != server:
        return obj.rsplit("/", 1)[-1]
    bare = function.lstrip("<&")
    if any(k in bare for k in ("p256", "nistz", "ecp_", "ring_core", "ring::")):
        return "server: ring"
    if bare.startswith(("sqlite3", "walChecksum", "pcache", "btree", "sqlx_sqlite")):
        return "server: sqlite"
    crate = re.split(r"::|<| |\.", bare)[0] or "?"
    if crate in ("core", "alloc", "std"):
        crate = "std"
    return "server: " + crate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--signins", type=int)
    ap.add_argument("--top", type=int, default=16)
    ap.add_argument("--functions", help="also list the top functions of objects whose path contains this")
    args = ap.parse_args()
    self_cost, calls, server = read(args.file)
    signins = args.signins or sum(n for f, n in calls.items() if "ParsedJws::verify" in f) // 2
    if signins == 0:
        raise SystemExit("no sign-ins in this profile (no ParsedJws::verify calls); pass --signins")
    groups = collections.Counter()
    for (obj, function), ir in self_cost.items():
        groups[group(obj, function, server)] += ir
    total = sum(self_cost.values())
    print(f"{total / signins / 1e6:.2f} M instructions per sign-in ({signins} sign-ins, {total:,} in all)")
    for g, ir in groups.most_common(args.top):
        print(f"{ir / signins / 1e3:9.0f} k  {100 * ir / total:5.1f} %  {g}")
    if args.functions:
        print(f"top functions in objects matching {args.functions!r}:")
        top = collections.Counter({f: ir for (o, f), ir in self_cost.items() if args.functions in o})
        for f, ir in top.most_common(10):
            print(f"{ir / signins / 1e3:9.0f} k  {f[:100]}")


if __name__ == "__main__":
    main()
