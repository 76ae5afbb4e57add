#!/usr/bin/env python3
"""The PyTorch peer baseline for bert_bench's BM_CudaInference, run in the same GPU call
(tools/gpu_check.sh): a random-init HuggingFace BertModel of bert-base shape (built from a config, no
download), fp16, eager and torch.compile, the same batch x seq shapes with full-length sequences.
Timed with CUDA events: median of --reps runs after warm-up. One JSON object per line.
Written on a machine without a GPU: NEVER RUN YET."""
import argparse
import json
import statistics
import sys

import torch
from transformers import BertConfig, BertModel


def time_model(model, batch, seq, reps):
    ids = torch.randint(1000, 30522, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask)
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(input_ids=ids, attention_mask=mask)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shapes", default="1x128,8x128,32x128,128x128", help="batch x seq list")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    torch.manual_seed(0)
    model = BertModel(BertConfig()).cuda().half().eval()  # BertConfig() defaults are bert-base
    with open(args.out, "w") as out:
        for mode in args.modes.split(","):
            m = torch.compile(model, dynamic=False) if mode == "compile" else model
            for batch, seq in shapes:
                try:
                    ms = time_model(m, batch, seq, args.reps)
                except Exception as e:  # report and go on: one failing shape must not lose the rest
                    print(f"{mode} {batch}x{seq}: {e}", file=sys.stderr)
                    continue
                row = {"framework": f"pytorch {torch.__version__}", "mode": mode, "dtype": "fp16", "batch": batch,
                       "seq": seq, "ms": ms, "seq_per_s": batch / ms * 1e3,
                       "attn": getattr(model.config, "_attn_implementation", "?"),
                       "device": torch.cuda.get_device_name()}
                print(json.dumps(row), flush=True)
                out.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
