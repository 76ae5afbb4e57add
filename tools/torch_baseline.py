#!/usr/bin/env python3
"""The PyTorch peer baseline for bert_bench's BM_CudaInference and BM_CudaTrainStep, run in the same
GPU call (tools/gpu_check.sh). Inference: a random-init HuggingFace BertModel of bert-base shape (built
from a config, no download), fp16, eager and torch.compile, the same batch x seq shapes with
full-length sequences. Training (--train): one step (fused AdamW with global-norm clipping; PyTorch
has no LAMB) of bert-base BertForSequenceClassification and bert-large BertForPreTraining under AMP (fp16 autocast +
GradScaler) and in fp32, with the device memory before / at peak / after (seed 001's table).
Timed with CUDA events: median of --reps runs after warm-up. One JSON object per line.
"""
import argparse
import json
import statistics
import sys

import torch
from transformers import BertConfig, BertForPreTraining, BertForSequenceClassification, BertModel


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


def train_step_ms(kind, batch, seq, amp, reps):
    """Median ms of one training step, and device memory (MiB) before, at peak and after."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    pre = torch.cuda.memory_allocated() / 2**20
    if kind == "bert-base-finetune":
        model = BertForSequenceClassification(BertConfig()).cuda().train()
    else:  # bert-large pre-training (MLM + NSP)
        config = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
        model = BertForPreTraining(config).cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    ids = torch.randint(1000, 30522, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)
    if kind == "bert-base-finetune":
        labels = {"labels": torch.randint(0, 2, (batch,), device="cuda")}
    else:
        mlm = torch.where(torch.rand(batch, seq, device="cuda") < 0.15, ids, torch.full_like(ids, -100))
        labels = {"labels": mlm, "next_sentence_label": torch.randint(0, 2, (batch,), device="cuda")}

    def step():
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = model(input_ids=ids, attention_mask=mask, **labels).loss
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    peak = torch.cuda.max_memory_allocated() / 2**20
    del model, opt, scaler
    torch.cuda.empty_cache()
    post = torch.cuda.memory_allocated() / 2**20
    return statistics.median(times), pre, peak, post


def main_train(args, out):
    shapes = []
    for item in args.train_shapes.split(","):  # model:BxS
        kind, shape = item.split(":")
        batch, seq = (int(v) for v in shape.split("x"))
        shapes.append((kind, batch, seq))
    for kind, batch, seq in shapes:
        for amp in (True, False):
            try:
                ms, pre, peak, post = train_step_ms(kind, batch, seq, amp, args.reps)
            except Exception as e:  # report and go on (e.g. out of memory at one shape)
                print(f"train {kind} {batch}x{seq} amp={amp}: {e}", file=sys.stderr)
                torch.cuda.empty_cache()
                continue
            row = {"framework": f"pytorch {torch.__version__}", "mode": "train", "model": kind,
                   "dtype": "amp-fp16" if amp else "fp32", "batch": batch, "seq": seq, "ms": ms,
                   "samples_per_s": batch / ms * 1e3, "mem_pre_MiB": pre, "mem_max_MiB": peak, "mem_post_MiB": post,
                   "device": torch.cuda.get_device_name()}
            print(json.dumps(row), flush=True)
            out.write(json.dumps(row) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--shapes", default="1x128,8x128,32x128,128x128", help="batch x seq list")
    p.add_argument("--modes", default="eager,compile")
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", required=True)
    p.add_argument("--train", action="store_true", help="time training steps instead of inference")
    p.add_argument("--train-shapes", default="bert-base-finetune:32x128,bert-base-finetune:16x512,"
                   "bert-large-pretrain:64x128,bert-large-pretrain:16x512", help="model:BxS list for --train")
    args = p.parse_args()
    if args.train:
        with open(args.out, "w") as out:
            main_train(args, out)
        return
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
