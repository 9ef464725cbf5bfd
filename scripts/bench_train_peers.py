#!/usr/bin/env python3
"""Peer numbers for `tessera bench train`: the same cases with PyTorch (CPU, 2 threads).

mlp_step: 784-512-512-10 ReLU MLP, batch 256, cross-entropy, SGD(lr=0.01), one full step
(forward, backward, update) per run; steps/s, median of 7 runs of 20 steps after warm-up.
chain10_eager_16M: ten element-wise ops (x*1.01, +0.5, tanh, ...) over 16M f32, eager; ms.

Usage: .cache/bench-venv/bin/python scripts/bench_train_peers.py
"""
import json
import time

import torch

torch.set_num_threads(2)


def median_time(fn, reps=20, runs=7):
    for _ in range(3):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        ts.append((time.perf_counter() - t) / reps)
    ts.sort()
    return ts[len(ts) // 2]


def mlp_step():
    x = torch.randn(256, 784)
    y = torch.randint(0, 10, (256,))
    m = torch.nn.Sequential(
        torch.nn.Linear(784, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 512), torch.nn.ReLU(),
        torch.nn.Linear(512, 10),
    )
    opt = torch.optim.SGD(m.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()

    return 1.0 / median_time(step)


def chain10():
    x = torch.rand(16 << 20) * 2 - 1

    def run():
        y = x
        for i in range(10):
            y = y * 1.01 if i % 3 == 0 else (y + 0.5 if i % 3 == 1 else torch.tanh(y))

    return median_time(run, reps=3) * 1e3


print(json.dumps({"case": "mlp_step", "value": round(mlp_step(), 2), "unit": "steps/s", "peer": "torch"}))
print(json.dumps({"case": "chain10_eager_16M", "value": round(chain10(), 2), "unit": "ms", "peer": "torch"}))
