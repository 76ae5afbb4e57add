#!/usr/bin/env python3
"""Writes a bert_run inputs file (safetensors: input_ids, attention_mask as I32 [rows, seq]) of seeded
random ids with ragged real lengths. Usage: make_inputs.py OUT ROWS SEQ VOCAB [SEED]"""
import json, random, struct, sys

out, rows, seq, vocab = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 7)
ids, mask = [], []
for _ in range(rows):
    n = rng.randint(2, seq)
    ids += [101] + [rng.randrange(1000, vocab) for _ in range(n - 2)] + [102] + [0] * (seq - n)
    mask += [1] * n + [0] * (seq - n)
blob_ids, blob_mask = struct.pack(f'<{len(ids)}i', *ids), struct.pack(f'<{len(mask)}i', *mask)
header = {'input_ids': {'dtype': 'I32', 'shape': [rows, seq], 'data_offsets': [0, len(blob_ids)]},
          'attention_mask': {'dtype': 'I32', 'shape': [rows, seq],
                             'data_offsets': [len(blob_ids), len(blob_ids) + len(blob_mask)]}}
h = json.dumps(header).encode()
h += b' ' * (-len(h) % 8)
with open(out, 'wb') as f:
    f.write(struct.pack('<Q', len(h)) + h + blob_ids + blob_mask)
