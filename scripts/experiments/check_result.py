#!/usr/bin/env python3
"""Checks an experiment's result folder (the test suite's smoke runs of scripts/experiment.sh).

    check_result.py DIR MIN_ROWS   table.md, table.csv (with at least MIN_ROWS rows and no unexpected
                                   error rows) and environment.txt exist; every *.png is a valid PNG
                                   and at least one is a real plot (>= 200 x 150 pixels, > 5 KB).
Standard library only. Exit 0 when all holds, 1 with the reasons otherwise.
"""
import csv
import glob
import os
import struct
import sys
import zlib


def png_problem(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return "not a PNG signature"
    pos, width, height, chunks = 8, 0, 0, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            return f"bad CRC in chunk {kind!r}"
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        chunks.append(kind)
        pos += 12 + length
    if not chunks or chunks[0] != b"IHDR" or chunks[-1] != b"IEND" or b"IDAT" not in chunks:
        return "chunks out of order or missing"
    if width < 200 or height < 150 or len(data) < 5000:
        return f"trivial ({width}x{height}, {len(data)} bytes)"
    return ""


def main():
    out, min_rows = sys.argv[1], int(sys.argv[2])
    errors = []
    for f in ("table.md", "table.csv", "environment.txt", "results.json"):
        if not os.path.exists(os.path.join(out, f)):
            errors.append(f"missing {f}")
    rows = []
    if os.path.exists(os.path.join(out, "table.csv")):
        rows = list(csv.DictReader(open(os.path.join(out, "table.csv"))))
        if len(rows) < min_rows:
            errors.append(f"table.csv has {len(rows)} rows, expected at least {min_rows}")
        for r in rows:
            status = r.get("status", "")
            if status and status != "ok" and not status.startswith("needs"):
                errors.append(f"row failed: {status}")
    pngs = sorted(glob.glob(os.path.join(out, "*.png")))
    if not pngs:
        errors.append("no plot (*.png)")
    problems = {p: png_problem(p) for p in pngs}
    if pngs and all(problems.values()):
        errors.append("no valid, non-trivial PNG: " + "; ".join(f"{os.path.basename(p)}: {m}" for p, m in problems.items()))
    if errors:
        print(f"check_result: {out}:\n  " + "\n  ".join(errors))
        sys.exit(1)
    print(f"check_result: {out}: {len(rows)} rows, {len(pngs)} plots: ok")


if __name__ == "__main__":
    main()
