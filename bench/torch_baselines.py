#!/usr/bin/env python3
"""bench/torch_baselines.py — the H200 ceilings and the PyTorch baselines a user would otherwise
write, measured in the same device run as dsa's CUDA benchmarks (scripts/device_run.sh).

Timing: CUDA events around back-to-back launches after warm-up, median of repeats (the
"sustained" method of ANCHORS §0). Prints one line per measurement and writes JSON if asked.

  python3 bench/torch_baselines.py [--json out.json] [--quick]
"""
import argparse
import json
import statistics

import torch


def time_ms(fn, warmup=3, reps=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="smaller shapes (smoke test)")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    rows = []

    def record(what, shape, ms, rate, unit):
        rows.append({"what": what, "shape": shape, "ms": ms, "rate": rate, "unit": unit})
        print(f"{what:<40} {shape:<38} {ms:9.3f} ms {rate:9.1f} {unit}", flush=True)

    # Ceilings: device copy (bytes read + written) and a large bf16 matmul on random data.
    n = (1 << 28) if args.quick else (1 << 30)  # fp32 elements: 1 or 4 GiB
    src = torch.randn(n, device=dev)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src))
    record("ceiling: device copy", f"{n * 4 >> 20} MiB", ms, 2 * n * 4 / ms / 1e9, "TB/s")
    del src, dst
    m = 4096 if args.quick else 8192
    a = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    b = torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    ms = time_ms(lambda: a @ b)
    record("ceiling: bf16 matmul", f"{m}^3", ms, 2 * m**3 / ms / 1e9, "TFLOPS")
    del a, b

    # torch.topk, k = 2048 over fp32 rows (the selection baseline of issue 4).
    for r, c in ([(64, 131072)] if args.quick else [(4096, 131072), (128, 131072), (64, 131072), (4, 131072)]):
        x = torch.randn(r, c, device=dev)
        ms = time_ms(lambda: torch.topk(x, 2048, dim=-1))
        record("torch.topk k=2048", f"{r} x {c}", ms, r * c * 4 / ms / 1e9, "TB/s")
        del x

    # Naive PyTorch sparse MLA prefill: gather + bmm + fp32 softmax (the baseline of issue 5).
    s_q, h, topk, s_kv = (512, 128, 2048, 32768) if args.quick else (4096, 128, 2048, 32768)
    tau = 0.1352337789
    q = (torch.randn(s_q, h, 576, device=dev) / 10).bfloat16()
    kv = (torch.randn(s_kv, 576, device=dev) / 10).bfloat16()
    idx = torch.stack([torch.randperm(s_kv, device=dev)[:topk] for _ in range(s_q)]).int()

    def naive_sparse():
        k = kv[idx.long()]                                 # [s_q, topk, 576]
        s = torch.bmm(q, k.transpose(1, 2)).float() * tau  # [s_q, h, topk]
        p = torch.softmax(s, dim=-1).bfloat16()
        return torch.bmm(p, k[:, :, :512])                 # [s_q, h, 512]

    ms = time_ms(naive_sparse, warmup=1, reps=3)
    flops = 2 * s_q * h * topk * (576 + 512)
    record("torch naive sparse MLA fwd", f"s_q {s_q} h {h} topk {topk} s_kv {s_kv}", ms, flops / ms / 1e9, "TFLOPS")

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
