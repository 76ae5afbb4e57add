#!/usr/bin/env python3
"""Compares the F32 tensors of two engine files (safetensors): prints the largest relative L2 distance
per tensor and exits 1 when it is above TOL (default 1e-5), or, with --exact, when any bit differs.
The key third of a fused QKV bias is held to 10 x TOL: softmax is invariant to it, so its gradient
is zero up to rounding and Adam turns that rounding into steps of size lr, which no two different
summation orders reproduce (every other tensor stays orders of magnitude inside TOL).
Usage: compare_models.py A B [TOL | --exact]"""
import json, math, struct, sys
from array import array


def tensors(path):
    with open(path, 'rb') as f:
        data = f.read()
    (n,) = struct.unpack('<Q', data[:8])
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == '__metadata__' or t['dtype'] != 'F32' or name.startswith(('opt.', 'trainer.')):
            continue
        a, b = t['data_offsets']
        out[name] = data[8 + n + a: 8 + n + b]
    return out


def main():
    a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
    exact = len(sys.argv) > 3 and sys.argv[3] == '--exact'
    tol = float(sys.argv[3]) if len(sys.argv) > 3 and not exact else 1e-5
    if a.keys() != b.keys():
        print('different tensor names:', sorted(a.keys() ^ b.keys())[:5])
        return 1
    worst, worst_name = 0.0, ''
    for name in sorted(a):
        if exact:
            if a[name] != b[name]:
                print(f'{name}: the bits differ')
                return 1
            continue
        x, y = array('f', a[name]), array('f', b[name])
        parts = [(name, x, y, 1.0)]
        if name.endswith('attn.qkv.bias'):
            h = len(x) // 3
            parts = [(f'{name}[{p}]', x[i * h:(i + 1) * h], y[i * h:(i + 1) * h], 10.0 if p == 'k' else 1.0)
                     for i, p in enumerate('qkv')]
        for part, xs, ys, allowance in parts:
            num = math.fsum((p - q) ** 2 for p, q in zip(xs, ys))
            den = math.fsum(p * p for p in xs)
            rel = (math.sqrt(num / den) if den > 0 else math.sqrt(num)) / allowance
            if rel > worst:
                worst, worst_name = rel, part
    where = f' ({worst_name}' + ('; key bias / 10)' if worst_name.endswith('[k]') else ')') if worst > 0 else ''
    print(f'{len(a)} tensors; ' + ('bit-identical' if exact else f'largest relative L2 {worst:.3g}{where}'))
    return 0 if exact or worst <= tol else 1


sys.exit(main())
