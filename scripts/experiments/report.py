#!/usr/bin/env python3
"""Tables and plots of one study experiment from bert_bench's Google Benchmark JSON.

    report.py NAME OUT_DIR      reads OUT_DIR/results*.json (and OUT_DIR/environment.txt), writes
                                OUT_DIR/table.md, OUT_DIR/table.csv and OUT_DIR/*.png, prints table.md.

Each experiment (scripts/experiment.sh --list, docs/EXPERIMENTS.md) has a function below that turns
the benchmarks' counters into rows and plots, and the study's published figures where it gave any.
Rows that could not run here carry the benchmark's "needs ..." message instead of numbers.
"""
import csv
import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


# ---- reading ------------------------------------------------------------------------------------

def load(out_dir):
    """Benchmarks of every results*.json in out_dir: dicts with name, args, label, counters, error."""
    runs, context = [], {}
    for path in sorted(glob.glob(os.path.join(out_dir, "results*.json"))):
        with open(path) as f:
            data = json.load(f)
        context.update(data.get("context", {}))
        for b in data.get("benchmarks", []):
            parts = b["name"].split("/")
            args = {}
            for p in parts[1:]:
                if ":" in p:
                    k, v = p.split(":", 1)
                    if k not in ("iterations", "repeats", "min_time"):
                        args[k] = int(v) if re.fullmatch(r"-?\d+", v) else v
            counters = {k: v for k, v in b.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            error = b.get("error_message", "") if b.get("error_occurred") else ""
            runs.append({"family": parts[0], "args": args, "label": b.get("label", ""),
                         "c": counters, "error": error, "file": os.path.basename(path)})
    return runs, context


def num(x, digits=3):
    if x is None or x == "":
        return ""
    if isinstance(x, str):
        return x
    if float(x).is_integer() and abs(x) < 1e9:
        return f"{int(x):,}"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.{digits}g}"


class Report:
    def __init__(self, name, out_dir, runs, context):
        self.name, self.out_dir, self.runs, self.context = name, out_dir, runs, context
        self.columns, self.rows = [], []
        self.notes, self.published, self.plots = [], [], []
        self.scale = context.get("experiment_scale", "default")

    def row(self, **kv):
        for k in kv:
            if k not in self.columns:
                self.columns.append(k)
        self.rows.append(kv)

    def plot(self, fig, file, caption):
        path = os.path.join(self.out_dir, file)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        self.plots.append((file, caption))

    def write(self):
        with open(os.path.join(self.out_dir, "table.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            for r in self.rows:
                w.writerow({k: r.get(k, "") for k in self.columns})
        lines = [f"# Experiment `{self.name}` ({self.scale} scale)", ""]
        env = os.path.join(self.out_dir, "environment.txt")
        if os.path.exists(env):
            lines += ["```", open(env).read().strip(), "```", ""]
        if self.scale == "smoke":
            self.notes.insert(0, "Smoke scale (the test suite's check that the experiment runs and reports): tiny "
                                 "grids, two-layer models where a shape is large, one thread: the figures mean nothing.")
        if self.notes:
            lines += [f"- {n}" for n in self.notes] + [""]
        lines += ["## This engine, this machine", ""]
        lines += ["| " + " | ".join(self.columns) + " |", "|" + " --- |" * len(self.columns)]
        for r in self.rows:
            lines.append("| " + " | ".join(num(r.get(k, "")) for k in self.columns) + " |")
        lines.append("")
        if self.published:
            lines += ["## Published (the study's own environment)", ""] + self.published + [""]
        if self.plots:
            lines += ["## Plots", ""] + [f"- [{f}]({f}): {c}" for f, c in self.plots] + [""]
        text = "\n".join(lines)
        with open(os.path.join(self.out_dir, "table.md"), "w") as f:
            f.write(text)
        print(text)

    def family(self, fam):
        return [r for r in self.runs if r["family"] == fam]


def needs(r):
    return r["error"] if r["error"].startswith("needs") else ("error: " + r["error"] if r["error"] else "")


# ---- study 000 --------------------------------------------------------------------------------

STUDY000_CPU = [  # configuration, PyTorch load/inference/GB/s, ONNX load/inference/GB/s (400 records in all)
    ("1x1", 0.61, 16.5, 26.71, 0.36, 9.25, 17.97),
    ("2x1", 0.62, 4.89, 35.99, 0.45, 5.00, 11.48),
    ("4x1", 0.67, 4.06, 50.32, 0.52, 4.17, 7.67),
]


def workers(rep):
    for r in rep.family("Workers"):
        c, a = r["c"], r["args"]
        cfg = f'{a["workers"]}x{a["threads"]}'
        if r["error"]:
            rep.row(config=cfg, records=a["records"], status=needs(r))
            continue
        rep.row(config=cfg, workers=a["workers"], threads=a["threads"], records=a["records"],
                load_s=c["load_s"], inference_s=c["inference_s"], records_per_s=c["records_per_s"],
                GBps_read=c["GBps_read"], peak_rss_MiB=c["rss_peak_MiB"], status="ok")
    rep.notes += [
        "workers x threads: W sessions on W std::threads in one process, each loading the model from its "
        "engine file, each with T OpenMP threads; the records (real SST-2 dev sentences, one per Run, "
        "unpadded) are split evenly. MPI ranks: see the data-parallel experiment.",
        "GBps_read: the bytes each forward must read (all weights + every op's activation inputs), counted "
        "from the shapes, over the inference time: a model-level figure like the study's, not a hardware counter.",
        "Weights are synthetic (seeded random, bert-base shape): speed does not depend on their values.",
    ]
    if rep.scale == "default":
        rep.notes.append("Scaled down: 200 records (the study: 400); configurations 1x1, 2x1, 4x1 and 1 x all threads.")
    rep.published += [
        "Study 000, 400 SST-like records in all, bert-base-uncased; the CPU is not named (the write-up compares "
        "it with an RTX 4080: 0.95 s load, 1.37 s inference).", "",
        "| config | PyTorch load s | PyTorch inference s | PyTorch GB/s | ONNX load s | ONNX inference s | ONNX GB/s |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    rep.published += [f"| {c} | {a} | {b} | {g} | {d} | {e} | {h} |" for c, a, b, g, d, e, h in STUDY000_CPU]
    ours = [r for r in rep.rows if r.get("status") == "ok"]
    if ours:
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        labels = [r["config"] for r in ours]
        ax[0].bar(labels, [r["records_per_s"] for r in ours], color="tab:blue", label="this engine (here)")
        pub = {c: (400 / p, 400 / o) for c, _, p, _, _, o, _ in STUDY000_CPU}
        xs = [i for i, l in enumerate(labels) if l in pub]
        ax[0].scatter(xs, [pub[labels[i]][0] for i in xs], marker="^", color="tab:orange", zorder=3,
                      label="PyTorch (study 000)")
        ax[0].scatter(xs, [pub[labels[i]][1] for i in xs], marker="s", color="tab:green", zorder=3,
                      label="ONNX Runtime (study 000)")
        ax[0].set_ylabel("records / s")
        ax[0].set_xlabel("workers x threads")
        ax[0].legend(fontsize=8)
        ax[1].bar(labels, [r["load_s"] for r in ours], color="tab:blue")
        ax[1].set_ylabel("model load time (s, slowest worker)")
        ax[1].set_xlabel("workers x threads")
        rep.plot(fig, "workers.png", "records/s and load time per configuration, study 000's figures as markers")


def data_parallel(rep):
    for r in sorted(rep.family("DataParallel"), key=lambda r: r["c"].get("ranks", 0)):
        c, a = r["c"], r["args"]
        if r["error"]:
            rep.row(setup="CPU ranks", records=a["records"], status=needs(r))
            continue
        rep.row(setup=f'{int(c["ranks"])} CPU rank(s) x {a["threads"]} thread', ranks=int(c["ranks"]),
                records=a["records"], load_s=c["load_s"], inference_s=c["inference_s"],
                records_per_s=c["records_per_s"], status="ok")
    for setup in ("1 GPU", "DP: one process, each batch split over 4 GPUs", "DDP: 4 GPU ranks"):
        rep.row(setup=setup, status="needs a GPU (none on this machine; the CUDA backend has never run)")
    rep.notes += ["Ranks are mpirun processes on this machine (bert_bench under `mpirun -np N`), each loading the "
                  "model and classifying its contiguous share of the records in padded batches of 8.",
                  "Load time: the slowest rank's; inference time: first to last barrier."]
    if rep.scale == "default":
        rep.notes.append("Scaled down: 200 records (the study: 4,000), 1 and 2 ranks (2 cores).")
    rep.published += ["Study 000, bert-base-uncased, 4,000 records, V100 GPUs (NYU HPC):", "",
                      "| setup | load s | inference s |", "| --- | --- | --- |",
                      "| single V100 | 2.97 | 47.31 |", "| DP 4 x V100 | 3.09 | 55.27 |", "| DDP 4 x V100 | 4.84 | 24.33 |"]
    ours = [r for r in rep.rows if r.get("status") == "ok"]
    if ours:
        fig, ax = plt.subplots(figsize=(7, 4))
        names = [r["setup"] for r in ours] + ["1 V100 (study)", "DP 4xV100 (study)", "DDP 4xV100 (study)"]
        vals = [r["records_per_s"] for r in ours] + [4000 / 47.31, 4000 / 55.27, 4000 / 24.33]
        ax.bar(names, vals, color=["tab:blue"] * len(ours) + ["tab:gray"] * 3)
        ax.set_ylabel("records / s")
        ax.tick_params(axis="x", rotation=20, labelsize=8)
        rep.plot(fig, "data_parallel.png", "records/s: CPU ranks here vs study 000's V100 figures")


# ---- study 001 --------------------------------------------------------------------------------

def finetune_batch_size(rep):
    per_batch = {}
    for r in sorted(rep.family("FinetuneBatchSize"), key=lambda r: r["args"]["batch"]):
        c, b = r["c"], r["args"]["batch"]
        if r["error"]:
            rep.row(batch=b, status=needs(r))
            continue
        for e in range(1, int(c["epochs"]) + 1):
            if f"e{e}_accuracy" not in c:
                continue
            rep.row(batch=b, epoch=e, train_loss=c[f"e{e}_train_loss"], dev_loss=c[f"e{e}_dev_loss"],
                    dev_accuracy=c[f"e{e}_accuracy"], dev_f1=c[f"e{e}_f1"], train_samples_per_s=c["train_samples_per_s"],
                    status="ok")
            per_batch.setdefault(b, []).append(rep.rows[-1])
        if not rep.notes:
            rep.notes.append(f'Model: {r["label"]}; {int(c["train_examples"])} SST-2 train examples, '
                             f'{int(c["dev_examples"])} dev examples, {int(c["epochs"])} epoch(s), AdamW lr '
                             f'{c["lr"]:.3g}, weight decay 0.01, warmup 10%, linear decay, dropout 0.1.')
    if rep.scale != "full":
        rep.notes.append("Scaled down: no pre-trained weights exist here, so a bert-mini-shaped model trains from "
                         "random weights at a from-scratch learning rate (5e-4; the study: pre-trained bert-base at "
                         "2.4e-5) on 1,500 SST-2 examples for 2 epochs. `--full` runs the study's recipe "
                         "(`--model FILE` for a pre-trained engine file).")
    rep.published += ["Study 001 (Colab, one GPU, not named) published its accuracy / F1 / loss per batch size only "
                      "as images (image.png, image-acc.png in its repository), not as numbers: no figures to put "
                      "beside these."]
    if per_batch:
        batches = sorted(per_batch)
        epochs = max(len(v) for v in per_batch.values())
        for metric, title in (("dev_accuracy", "dev accuracy"), ("dev_f1", "dev F1"), ("dev_loss", "dev loss"),
                              ("train_loss", "train loss")):
            fig, ax = plt.subplots(figsize=(6, 4))
            for e in range(epochs):
                ax.plot(batches, [per_batch[b][e][metric] if e < len(per_batch[b]) else float("nan") for b in batches],
                        marker="o", label=f"epoch {e + 1}")
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.set_xlabel("batch size")
            ax.set_ylabel(title)
            ax.legend()
            rep.plot(fig, f"{metric}_vs_batch.png", f"{title} against batch size, one line per epoch")


STUDY001 = [("ddp", 1.31, 11.19, 1.31, 0.6), ("ddp_fp16", 1.32, 8.72, 1.32, 1.6), ("gemini", 1.19, 6.49, 1.19, 2.2),
            ("low_level_zero", 1.2, 6.5, 1.20, 2.0)]


def finetune_memory(rep):
    runs = sorted(rep.family("FinetuneMemory"), key=lambda r: (r["c"].get("ranks", 1), r["args"]["config"]))
    ran = {r["args"]["config"] for r in runs if not r["error"]}
    shown_errors = set()
    for r in runs:  # a configuration that ran (e.g. ZeRO under mpirun) drops its "needs" row
        c, config = r["c"], r["args"]["config"]
        if r["error"]:
            if config not in ran and config not in shown_errors:
                shown_errors.add(config)
                rep.row(configuration=r["label"], status=needs(r))
            continue
        rep.row(configuration=r["label"], processes=int(c["ranks"]), batch=int(c["batch"]), seq=int(c["seq"]),
                pre_MiB=c["rss_pre_MiB"], max_MiB=c["rss_peak_MiB"], post_MiB=c["rss_post_MiB"],
                samples_per_s=c["samples_per_s"], params_M=c["params_M"], engine_params_MiB=c["engine_parameters_MiB"],
                engine_grads_MiB=c["engine_gradients_MiB"], engine_optimizer_MiB=c["engine_optimizer_MiB"],
                engine_activations_MiB=c["engine_activations_MiB"], status="ok")
    rep.notes += ["Memory is the process's resident set (rank 0's under mpirun): pre = before the Trainer is created "
                  "(the synthetic model already loaded), max = the peak while it is created and trains (peak reset "
                  "through /proc/self/clear_refs), post = after it is destroyed; engine_* = the Trainer's own "
                  "accounting (Trainer::Memory: parameters, gradients, optimizer moments, activations).",
                  "Model: bert-base shape with vocab 1000 and 10 labels (the study's), random weights and tokens; "
                  "AdamW lr 2.4e-5, weight decay 0.01."]
    if rep.scale == "default":
        rep.notes.append("Scaled down: batch 4 x seq 256 for 2 steps (the study: batch 16 x seq 512 over 1000 "
                         "samples); DDP / ZeRO rows with 2 ranks x 1 thread.")
    rep.published += ["Study 001, Colab (one GPU, not named), CUDA memory, batch 16, seq 512, vocab 1000, 10 labels:", "",
                      "| plugin | pre GB | max GB | post GB | samples/s | params |", "| --- | --- | --- | --- | --- | --- |"]
    rep.published += [f"| {p} | {a} | {b} | {c} | {d} | 86.82M |" for p, a, b, c, d in STUDY001]
    ours = [r for r in rep.rows if r.get("status") == "ok"]
    if ours:
        fig, ax = plt.subplots(figsize=(8, 4))
        x = range(len(ours))
        for i, (k, col) in enumerate((("pre_MiB", "tab:green"), ("max_MiB", "tab:red"), ("post_MiB", "tab:blue"))):
            ax.bar([j + (i - 1) * 0.27 for j in x], [r[k] / 1024 for r in ours], width=0.27, color=col, label=k[:-4])
        ax.set_xticks(list(x), [r["configuration"] for r in ours], rotation=15, fontsize=8)
        ax.set_ylabel("resident memory (GiB)")
        ax.legend()
        rep.plot(fig, "finetune_memory.png", "pre / max / post resident memory per configuration")


# ---- study 002 --------------------------------------------------------------------------------

def zoo_deploy(rep):
    data = {}
    for r in rep.family("ZooDeploy"):
        a, c = r["args"], r["c"]
        cfg = "1 thread" if a["threads"] == 1 else f'all threads ({int(c.get("threads", 0))})'
        if r["error"]:
            rep.row(model=r["label"] or a["model"], configuration=cfg, inputs=a["inputs"], status=needs(r))
            continue
        data[(r["label"], cfg, a["inputs"])] = c["seconds"]
    for (model, cfg, n), s in sorted(data.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][2])):
        base = data.get(("bert-base", cfg, n))
        rep.row(model=model, configuration=cfg, inputs=n, seconds=s, sentences_per_s=n / s,
                speedup_vs_bert_base=(base / s) if base else "", status="ok")
    rep.row(model="all four", configuration="GPU", status="needs a GPU (none on this machine)")
    rep.notes += ["Total inference time of N SST-2 dev sentences sent as one request: tokenization, one batch "
                  "padded to its longest sentence, the classifier; after one warm-up request. Synthetic weights."]
    if rep.scale == "default":
        rep.notes.append("Scaled down: input sizes 1, 8, 64 (the study: up to 256); one timed request each.")
    rep.published += ["Study 002 published these as figures only (img/time_vs_input.png, speedup.png, all_vs_all.png, "
                      "largest_input_snapshot.png in its repository; no numbers): 1-core Skylake (GCP N1), "
                      "8-core Skylake (GCP N2), one V100. Its reading: the CPUs saturate even at small inputs; "
                      "on the GPU the smaller models' speed-up grows with the input size."]
    if not data:
        return
    models = sorted({k[0] for k in data}, key=lambda m: ["bert-base", "bert-tiny", "distilbert-base", "electra-small"].index(m)
                    if m in ["bert-base", "bert-tiny", "distilbert-base", "electra-small"] else 9)
    cfgs = sorted({k[1] for k in data})
    sizes = sorted({k[2] for k in data})
    colors = dict(zip(models, ["tab:blue", "tab:red", "tab:green", "tab:cyan"]))
    for key, title, file in (("seconds", "total inference time (s)", "time_vs_input.png"),
                             ("speedup", "speed-up over bert-base", "speedup.png")):
        fig, axes = plt.subplots(1, len(cfgs), figsize=(5 * len(cfgs), 4), squeeze=False)
        for ax, cfg in zip(axes[0], cfgs):
            for m in models:
                ys = []
                for n in sizes:
                    s = data.get((m, cfg, n))
                    base = data.get(("bert-base", cfg, n))
                    ys.append(float("nan") if s is None else (s if key == "seconds" else (base / s if base else float("nan"))))
                ax.plot(sizes, ys, marker="o", color=colors[m], label=m)
            ax.set_xscale("log", base=2)
            if key == "seconds":
                ax.set_yscale("log")
            ax.set_title(cfg)
            ax.set_xlabel("input size (sentences)")
            ax.set_ylabel(title)
            ax.legend(fontsize=8)
        rep.plot(fig, file, f"{title} against input size, one panel per configuration")
    markers = dict(zip(cfgs, ["o", "s", "^"]))
    fig, ax = plt.subplots(figsize=(7, 5))
    for (m, cfg, n), s in data.items():
        ax.scatter(n, s, color=colors[m], marker=markers[cfg])
    for m in models:
        ax.scatter([], [], color=colors[m], marker="o", label=m)
    for cfg in cfgs:
        ax.scatter([], [], color="gray", marker=markers[cfg], label=cfg)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("input size (sentences)")
    ax.set_ylabel("total inference time (s)")
    ax.legend(fontsize=8)
    rep.plot(fig, "all_vs_all.png", "every model and configuration: colour = model, marker = configuration")
    big = sizes[-1]
    fig, ax = plt.subplots(figsize=(7, 4))
    names, vals, cols = [], [], []
    for cfg in cfgs:
        for m in models:
            if (m, cfg, big) in data:
                names.append(f"{m}\n{cfg}")
                vals.append(data[(m, cfg, big)])
                cols.append(colors[m])
    ax.bar(names, vals, color=cols)
    ax.set_ylabel(f"time for {big} sentences (s)")
    ax.tick_params(axis="x", labelsize=7)
    rep.plot(fig, "largest_input_snapshot.png", f"the largest input ({big} sentences)")


def optimization(rep):
    ok = []
    for r in rep.family("Optimization"):
        a, c = r["args"], r["c"]
        model, _, mode = r["label"].partition(" ")
        cfg = "1 thread" if a["threads"] == 1 else "all threads"
        if r["error"]:
            rep.row(model=model, path=mode, configuration=cfg, status=needs(r))
            continue
        rep.row(model=model, path=mode, configuration=cfg, sentences=int(c["sentences"]),
                ms_per_batch32=c["ms_per_batch32"], sentences_per_s=c["sentences_per_s"],
                dev_accuracy=c["accuracy"] if c["accuracy"] >= 0 else "n/a (synthetic weights)", status="ok")
        ok.append(rep.rows[-1])
    rep.notes += ["SST-2 dev sentences in batches of 32 padded to 128 tokens; `packed` runs the same batches with "
                  "SessionOptions.remove_padding (the encoder on the real tokens only). int8 and bf16 rows load the "
                  "model with LoadOptions.precision (padded, and packed too) and print the engine's error when it "
                  "refuses.",
                  "bert-tiny is fine-tuned here from random weights (no pre-trained weights exist); bert-base is "
                  "synthetic (latency only)."]
    if rep.scale == "default":
        rep.notes.append("Scaled down: bert-tiny trained on 4,000 SST-2 examples for 1 epoch; bert-base timed on 128 "
                         "dev sentences; the study's DistilBERT / ELECTRA rows run with --full.")
    rep.published += ["Study 002 published its ONNX graph-optimisation and int8 results only as a figure "
                      "(img/onnx_opt.png): 1-core Skylake (N1) and V100 gained nothing, the 8-core N2 (AVX-512, VNNI) "
                      "gained from int8."]
    if ok:
        fig, ax = plt.subplots(figsize=(8, 4))
        names = [f'{r["model"]}\n{r["path"]}\n{r["configuration"]}' for r in ok]
        ax.bar(names, [r["ms_per_batch32"] for r in ok], color="tab:blue")
        ax.set_ylabel("ms per batch of 32")
        ax.tick_params(axis="x", labelsize=6)
        rep.plot(fig, "optimization.png", "latency per model, path and thread configuration")


# ---- study 003 --------------------------------------------------------------------------------

def study003(rep, fam, x, title, file, value, ylabel):
    series = {}
    for r in rep.family(fam):
        a, c = r["args"], r["c"]
        model = r["label"].split(" ")[0] if r["label"] else str(a["model"])
        if r["error"]:
            rep.row(model=model, batch=a["batch"], seq=a["seq"], status=needs(r))
            continue
        row = dict(model=model, batch=a["batch"], seq=a["seq"])
        if value == "seconds":
            row.update(seconds=c["seconds"], threads=int(c["threads"]))
        else:
            row.update(peak_rss_MiB=c["rss_peak_MiB"], rss_before_MiB=c["rss_pre_MiB"],
                       activations_MiB=c["rss_peak_minus_pre_MiB"], workspace_MiB=c["workspace_MiB"])
        if "1024-row" in r["label"]:
            row["note"] = "1024-row position table (synthetic)"
        row["status"] = "ok"
        rep.row(**row)
        series.setdefault(model, []).append((a[x], c["seconds"] if value == "seconds" else c["rss_peak_MiB"]))
    if series:
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, pts in series.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=m)
        ax.set_xlabel("sequence length" if x == "seq" else "batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        rep.plot(fig, file, title)
    rep.published += ["Study 003 published its memory and time results as plots only (plots_pt/*: P100 and K80 GPUs, "
                      "HF transformers' benchmark, memory as nvidia-smi reports it). Its reading: memory and time "
                      "grow about linearly with batch and sequence; memory SqueezeBERT < DistilBERT < BERT; "
                      "time DistilBERT < SqueezeBERT < BERT; batch 512 x seq 512 did not fit either GPU."]
    rep.notes.append("Models: QA heads of the bert-base, distilbert-base and squeezebert-uncased shapes, synthetic "
                     "weights, random tokens, all threads.")


def memory_vs_seq(rep):
    study003(rep, "MemoryVsSeq", "seq", "peak resident memory vs sequence length", "memory_vs_seq.png",
             "memory", "peak resident memory (MiB)")
    rep.notes.append("Memory: the process's peak resident set (model weights included, as nvidia-smi counts them) while "
                     "a session is created and runs once; activations = peak minus before; workspace = "
                     "Session::workspace_bytes.")
    if rep.scale == "default":
        rep.notes.append("Scaled down: batch 8 (the study: 32), seq 32, 128, 512 (1024, with a 1024-row position table, "
                         "runs with --full).")


def memory_vs_batch(rep):
    study003(rep, "MemoryVsBatch", "batch", "peak resident memory vs batch size", "memory_vs_batch.png",
             "memory", "peak resident memory (MiB)")
    rep.notes.append("Memory: as in memory-vs-seq (peak resident set, model included).")
    if rep.scale == "default":
        rep.notes.append("Scaled down: seq 128 over batch 8, 16, 32, 64 (the study: seq 512 over batch 64 .. 512).")


def time_vs_seq(rep):
    study003(rep, "TimeVsSeq", "seq", "inference time vs sequence length", "time_vs_seq.png", "seconds",
             "seconds per batch")
    rep.notes.append("Time: one batch after one warm-up run.")
    if rep.scale == "default":
        rep.notes.append("Scaled down: batch 8 (the study: 256) over seq 8, 32, 128, 512.")


# ---- study 004 --------------------------------------------------------------------------------

def training_throughput(rep, fam):
    ok = []
    for r in rep.family(fam):
        c = r["c"]
        if r["error"]:
            rep.row(setup=r["label"], status=needs(r))
            continue
        rep.row(setup=r["label"], batch=int(c["batch"]), seq=int(c["seq"]), threads=int(c["threads"]),
                seconds_per_step=c["seconds_per_step"], sequences_per_s=c["sequences_per_s"], params_M=c["params_M"],
                engine_memory_MiB=c["engine_total_MiB"], status="ok")
        ok.append(rep.rows[-1])
    rep.published += ["Study 004 (NVIDIA's DeepLearningExamples BERT on its GPUs) leaves its 'Measuring Throughput' "
                      "and 'Profiling' sections empty: it published no figures to compare with."]
    if ok:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.barh([r["setup"] for r in ok], [r["sequences_per_s"] for r in ok], color="tab:blue")
        ax.set_xlabel("sequences / s")
        ax.tick_params(axis="y", labelsize=7)
        rep.plot(fig, f"{fam.lower()}_throughput.png", "training throughput (sequences/s)")


def pretrain(rep):
    training_throughput(rep, "Pretrain")
    rep.notes.append("BertForPreTraining (MLM + NSP), LAMB (eps 1e-6, weight decay 0.01, lr 6e-3 / 4e-3), random tokens "
                     "with 15% MLM labels; synthetic weights; one warm-up step, then timed steps.")
    if rep.scale == "default":
        rep.notes.append("Scaled down: batch 2 (phase 1, seq 128) and 1 (phase 2, seq 512), one timed step, bert-large "
                         "phase 1 only (NVIDIA's recipe: global batches of 65,536 / 32,768 by accumulation).")


def squad(rep):
    training_throughput(rep, "Squad")
    rep.notes.append("BertForQuestionAnswering at seq 384, AdamW lr 3e-5, random tokens and answer spans; synthetic "
                     "weights; one warm-up step, then timed steps.")
    if rep.scale == "default":
        rep.notes.append("Scaled down: batch 2, one timed step, bert-base only (--full: batch 32, bert-large too).")


def profile(rep):
    for r in rep.family("Profile"):
        c = r["c"]
        kind = "training step" if r["args"].get("training") == 1 else "inference"
        if r["error"]:
            rep.row(run=kind, op="", status=needs(r))
            continue
        ops = sorted(((k[3:], v) for k, v in c.items() if k.startswith("ms:")), key=lambda kv: -kv[1])
        total = sum(v for _, v in ops)
        bars = []
        for op, ms in ops:
            calls = c.get("calls:" + op, "")
            gflop, gbytes = c.get("gflop:" + op), c.get("gbytes:" + op)
            if op == "activation":  # one op name for every activation (FFN, pooler, heads): no one size
                gbytes = None
            rep.row(run=kind, op=op, ms=ms, share_pct=100 * ms / total if total else 0, calls=calls,
                    GFLOPs=gflop / (ms / 1e3) if gflop and ms > 0 else "",
                    GBps=gbytes / (ms / 1e3) if gbytes and ms > 0 else "", status="ok")
            bars.append((op, ms))
        rep.notes.append(f'{kind}: {r["label"]}, {int(c["threads"])} threads, {c["ms_per_run"]:.1f} ms per run '
                         f'(sum of ops {total:.1f} ms).')
        if bars:
            fig, ax = plt.subplots(figsize=(7, 0.35 * len(bars) + 1.2))
            ax.barh([b[0] for b in bars][::-1], [b[1] for b in bars][::-1], color="tab:blue")
            ax.set_xlabel("ms per run")
            ax.set_title(kind)
            rep.plot(fig, f"profile_{kind.split()[0]}.png", f"{kind}: time per op kind, sorted")
    rep.notes += ["GFLOP/s: the op's multiply-add FLOPs from the shapes; GB/s (memory-bound ops): bytes read + written "
                  "from the shapes; per-run times from SessionOptions.profile (each op timed by the engine).",
                  "The training step is split into forward+backward and the optimizer only: the Trainer has no "
                  "per-op profiling option (TrainerOptions has none; adding one is an engine change left to its owners)."]
    rep.published += ["Study 004 profiled with Nsight Compute but published no profile (its section is empty)."]


EXPERIMENTS = {
    "workers": workers, "data-parallel": data_parallel, "finetune-batch-size": finetune_batch_size,
    "finetune-memory": finetune_memory, "zoo-deploy": zoo_deploy, "optimization": optimization,
    "memory-vs-seq": memory_vs_seq, "memory-vs-batch": memory_vs_batch, "time-vs-seq": time_vs_seq,
    "pretrain": pretrain, "squad": squad, "profile": profile,
}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in EXPERIMENTS:
        sys.exit(f"usage: report.py NAME OUT_DIR (NAME: {', '.join(EXPERIMENTS)})")
    name, out_dir = sys.argv[1], sys.argv[2]
    runs, context = load(out_dir)
    if not runs:
        sys.exit(f"report.py: no benchmarks in {out_dir}/results*.json")
    rep = Report(name, out_dir, runs, context)
    EXPERIMENTS[name](rep)
    rep.write()


if __name__ == "__main__":
    main()
