#!/usr/bin/env python3
"""Peer numbers for `tessera bench train`: the same cases with PyTorch (CPU) and MLX (CPU).

Cases (names as `tessera bench train --json` prints them):
  mlp_step                    784-512-512-10 ReLU MLP, batch 256, cross-entropy, SGD(lr=0.01): one
                              full step (forward, backward, update); steps/s
  mlp_step_compiled           the same step compiled (torch.compile / mx.compile with the model and
                              optimizer state captured); steps/s
  chain10_eager_16M           ten element-wise ops over 16M f32 (x*1.01, +0.5, tanh, repeated),
                              each op evaluated on its own; ms
  chain10_compiled_16M        the same ten ops compiled into one function (torch.compile /
                              mx.compile); ms
  chain10_cheap_compiled_16M  ten cheap ops (*1.01, +0.5, max -0.9, min 2, -0.25, repeated)
                              compiled; ms
  add_f32_16M_reference       one add of a scalar over the same 16M f32 (the one-pass reference;
                              torch writes into a kept buffer with out=, MLX reuses its cached
                              buffers); ms

Every case: warm-up (which also compiles), then the median of 7 runs. Threads: --threads (default
2) for torch (set_num_threads) and, through OMP_NUM_THREADS, for anything that reads it; MLX's
CPU backend manages its own threads. torch.compile needs a C++ compiler (Inductor); if it fails,
the compiled torch cases are left out with a message on stderr. JSON lines on stdout, with a
"peer" field; progress on stderr.

Usage: .cache/bench-venv/bin/python scripts/bench_train_peers.py [--peer torch|mlx|all]
       [--threads 2] [--cases a,b]
"""
import argparse
import json
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--peer", default="all", choices=["torch", "mlx", "all"])
ap.add_argument("--threads", default="2")
ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
ARGS = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = ARGS.threads
N16M = 16 << 20


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wanted(case):
    return not ARGS.cases or case in ARGS.cases.split(",")


def median_time(fn, reps, runs=7, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        ts.append((time.perf_counter() - t) / reps)
    ts.sort()
    return ts[len(ts) // 2]


def emit(case, value, unit, peer):
    print(json.dumps({"case": case, "value": round(value, 2), "unit": unit, "peer": peer}),
          flush=True)


def chain_op(i, y, tanh):
    return y * 1.01 if i % 3 == 0 else (y + 0.5 if i % 3 == 1 else tanh(y))


def cheap_op(i, y, maximum, minimum):
    k = i % 5
    if k == 0:
        return y * 1.01
    if k == 1:
        return y + 0.5
    if k == 2:
        return maximum(y, -0.9)
    if k == 3:
        return minimum(y, 2.0)
    return y - 0.25


def bench_torch():
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(ARGS.threads))
    log(f"[torch] version {torch.__version__}, threads={torch.get_num_threads()}")
    peer = "torch"

    def mlp():
        m = torch.nn.Sequential(
            torch.nn.Linear(784, 512), torch.nn.ReLU(),
            torch.nn.Linear(512, 512), torch.nn.ReLU(),
            torch.nn.Linear(512, 10),
        )
        return m, torch.optim.SGD(m.parameters(), lr=0.01)

    x = torch.randn(256, 784)
    y = torch.randint(0, 10, (256,))
    if wanted("mlp_step"):
        m, opt = mlp()

        def step():
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()

        emit("mlp_step", 1.0 / median_time(step, reps=20), "steps/s", peer)

    xs = torch.rand(N16M) * 2 - 1
    if wanted("chain10_eager_16M"):
        def eager():
            z = xs
            for i in range(10):
                z = chain_op(i, z, torch.tanh)

        emit("chain10_eager_16M", median_time(eager, reps=3) * 1e3, "ms", peer)
    if wanted("add_f32_16M_reference"):
        out = torch.empty_like(xs)  # into a kept buffer: no fresh 64 MB to fault in per call
        emit("add_f32_16M_reference",
             median_time(lambda: torch.add(xs, 0.5, out=out), reps=10) * 1e3, "ms", peer)

    compiled = [c for c in ("mlp_step_compiled", "chain10_compiled_16M",
                            "chain10_cheap_compiled_16M") if wanted(c)]
    if not compiled:
        return
    try:
        if "mlp_step_compiled" in compiled:
            m, opt = mlp()

            @torch.compile
            def fwd_bwd(a, b):
                loss = F.cross_entropy(m(a), b)
                loss.backward()
                return loss

            def step_c():
                opt.zero_grad()
                fwd_bwd(x, y)
                opt.step()

            log("[torch] compiling the MLP step (Inductor)")
            emit("mlp_step_compiled", 1.0 / median_time(step_c, reps=20), "steps/s", peer)
        if "chain10_compiled_16M" in compiled:
            f = torch.compile(lambda z: _fold(z, lambda i, v: chain_op(i, v, torch.tanh)))
            emit("chain10_compiled_16M", median_time(lambda: f(xs), reps=5) * 1e3, "ms", peer)
        if "chain10_cheap_compiled_16M" in compiled:
            g = torch.compile(lambda z: _fold(
                z, lambda i, v: cheap_op(i, v, torch.clamp_min, torch.clamp_max)))
            emit("chain10_cheap_compiled_16M", median_time(lambda: g(xs), reps=5) * 1e3, "ms",
                 peer)
    except Exception as e:  # Inductor needs a working C++ toolchain
        log(f"[torch] torch.compile failed, compiled cases left out: {type(e).__name__}: {e}")


def _fold(z, op):
    for i in range(10):
        z = op(i, z)
    return z


def bench_mlx():
    from functools import partial

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim

    log(f"[mlx] version {mx.__version__}, device={mx.default_device()} "
        "(MLX's CPU backend manages its own threads)")
    peer = "mlx"

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(784, 512), nn.Linear(512, 512), nn.Linear(512, 10)]

        def __call__(self, a):
            for i, layer in enumerate(self.layers):
                a = layer(a)
                if i < 2:
                    a = nn.relu(a)
            return a

    def loss_fn(model, a, b):
        return nn.losses.cross_entropy(model(a), b, reduction="mean")

    x = mx.random.normal((256, 784))
    y = mx.random.randint(0, 10, (256,))
    mx.eval(x, y)
    for case, compiled in (("mlp_step", False), ("mlp_step_compiled", True)):
        if not wanted(case):
            continue
        model = Mlp()
        opt = optim.SGD(learning_rate=0.01)
        mx.eval(model.parameters())
        loss_and_grad = nn.value_and_grad(model, loss_fn)

        def step_body(a, b):
            loss, grads = loss_and_grad(model, a, b)
            opt.update(model, grads)
            return loss

        if compiled:
            state = [model.state, opt.state]
            body = partial(mx.compile, inputs=state, outputs=state)(step_body)
        else:
            body = step_body

        def step():
            loss = body(x, y)
            mx.eval(loss, model.parameters(), opt.state)

        emit(case, 1.0 / median_time(step, reps=20), "steps/s", peer)

    xs = mx.random.uniform(-1.0, 1.0, (N16M,))
    mx.eval(xs)
    if wanted("chain10_eager_16M"):
        def eager():
            z = xs
            for i in range(10):
                z = chain_op(i, z, mx.tanh)
                mx.eval(z)

        emit("chain10_eager_16M", median_time(eager, reps=3) * 1e3, "ms", peer)
    if wanted("chain10_compiled_16M"):
        f = mx.compile(lambda z: _fold(z, lambda i, v: chain_op(i, v, mx.tanh)))
        emit("chain10_compiled_16M", median_time(lambda: mx.eval(f(xs)), reps=5) * 1e3, "ms",
             peer)
    if wanted("chain10_cheap_compiled_16M"):
        g = mx.compile(lambda z: _fold(z, lambda i, v: cheap_op(i, v, mx.maximum, mx.minimum)))
        emit("chain10_cheap_compiled_16M", median_time(lambda: mx.eval(g(xs)), reps=5) * 1e3,
             "ms", peer)
    if wanted("add_f32_16M_reference"):
        emit("add_f32_16M_reference", median_time(lambda: mx.eval(xs + 0.5), reps=10) * 1e3,
             "ms", peer)


PEERS = {"torch": bench_torch, "mlx": bench_mlx}
for name in (PEERS if ARGS.peer == "all" else [ARGS.peer]):
    try:
        PEERS[name]()
    except ImportError as e:
        log(f"[{name}] not installed, skipped: {e}")
