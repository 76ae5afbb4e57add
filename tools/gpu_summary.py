#!/usr/bin/env python3
"""Summary table of a GPU run (tools/gpu_check.sh): bert_bench's BM_CudaGemmPeak, BM_CudaInference and
BM_CudaTrainStep (Google Benchmark JSON) side by side with the PyTorch baselines (tools/torch_baseline.py
JSON lines: inference rows and, with "mode": "train", training rows), as Markdown.
Usage: gpu_summary.py bench.json torch.jsonl device.txt"""
import json
import sys


def runs(bench, prefix, fields):
    """The successful runs of one benchmark: (run, name arguments, the first `fields` label words, ms)."""
    for b in bench:
        if not b["name"].startswith(prefix) or b.get("error_occurred"):
            continue
        parts = dict(p.split(":") for p in b["name"].split("/")[1:] if ":" in p)
        label = (b.get("label", "").split() + ["?"] * fields)[:fields]
        ms = b["real_time"] if b.get("time_unit") == "ms" else b["real_time"] / 1e6
        yield b, parts, label, ms


def main():
    bench_path, torch_path, device_path = sys.argv[1:4]
    try:
        bench = json.load(open(bench_path))["benchmarks"]
    except (OSError, ValueError, KeyError) as e:
        print(f"no benchmark results ({e})")
        bench = []
    torch_rows = []
    try:
        torch_rows = [json.loads(l) for l in open(torch_path) if l.strip()]
    except OSError:
        pass
    print("# GPU run\n")
    try:
        print("```\n" + open(device_path).read().strip() + "\n```\n")
    except OSError:
        pass
    peaks = {}
    print("## GEMM peak (8192^3, engine's cuBLASLt path)\n\n| kind | TFLOP/s |\n| --- | ---: |")
    for b in bench:
        if b["name"].startswith("BM_CudaGemmPeak") and "TFLOP/s" in b:
            kind = b.get("label", b["name"]).split()[0]
            peaks[kind] = b["TFLOP/s"]
            print(f"| {kind} | {b['TFLOP/s']:.1f} |")
    eager = {(r["batch"], r["seq"]): r for r in torch_rows if r["mode"] == "eager"}
    compiled = {(r["batch"], r["seq"]): r for r in torch_rows if r["mode"] == "compile"}
    print("\n## Inference (manual time = CUDA events around Run; mean of the iterations)\n")
    print("| model | precision | lengths | batch | seq | ms | seq/s | TFLOP/s | % GEMM peak | PyTorch eager fp16 ms | "
          "torch.compile ms | speed-up vs eager |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b, parts, (model, precision, lengths), ms in runs(bench, "BM_CudaInference", 3):
        batch, seq = int(parts.get("batch", 0)), int(parts.get("seq", 0))
        e = eager.get((batch, seq)) if model == "bert-base" and lengths == "full" else None
        c = compiled.get((batch, seq)) if model == "bert-base" and lengths == "full" else None
        fmt = lambda r: f"{r['ms']:.3f}" if r else ""
        speedup = f"{e['ms'] / ms:.2f}x" if e else ""
        print(f"| {model} | {precision} | {lengths} | {batch} | {seq} | {ms:.3f} | {b.get('seq/s', 0):.0f} | "
              f"{b.get('TFLOP/s', 0):.1f} | {b.get('pct_gemm_peak', 0):.1f} | {fmt(e)} | {fmt(c)} | {speedup} |")
    train_summary(bench, [r for r in torch_rows if r.get("mode") == "train"])


def train_summary(bench, rows):
    """The training steps beside PyTorch (AMP fp16 and fp32) at the same model, batch and seq."""
    torch_at = {(r["model"], r["batch"], r["seq"], r["dtype"]): r for r in rows}
    print("\n## Training step (wall time of ForwardBackward + Step; mean of the iterations)\n")
    print("| model | precision | attention / activations | batch | seq | ms | samples/s | TFLOP/s | MFU % | mem pre / max / post MiB | "
          "PyTorch AMP samples/s | PyTorch AMP mem max MiB | PyTorch fp32 samples/s | speed-up vs AMP |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for b, parts, (model, task, precision), ms in runs(bench, "BM_CudaTrainStep", 3):
        attention = {"0": "matmul", "1": "fused", "2": "fused+recompute"}.get(parts.get("memory"), "?")
        batch, seq = int(parts.get("batch", 0)), int(parts.get("seq", 0))
        kind = f"{model}-{'finetune' if task == 'fine-tune' else 'pretrain'}"
        amp = torch_at.get((kind, batch, seq, "amp-fp16"))
        fp32 = torch_at.get((kind, batch, seq, "fp32"))
        mem = f"{b.get('mem_pre_MiB', 0):.0f} / {b.get('mem_max_MiB', 0):.0f} / {b.get('mem_post_MiB', 0):.0f}"
        sps = b.get("samples/s", 0)
        cells = [f"{model} {task}", precision, attention, str(batch), str(seq), f"{ms:.2f}", f"{sps:.1f}",
                 f"{b.get('TFLOP/s', 0):.1f}", f"{b.get('mfu_pct', 0):.1f}", mem,
                 f"{amp['samples_per_s']:.1f}" if amp else "", f"{amp['mem_max_MiB']:.0f}" if amp else "",
                 f"{fp32['samples_per_s']:.1f}" if fp32 else "",
                 f"{sps / amp['samples_per_s']:.2f}x" if amp else ""]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
