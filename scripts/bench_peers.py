#!/usr/bin/env python3
"""Peer baselines for `tessera bench ops --json`.

Runs the same benchmark cases with NumPy, PyTorch (CPU) and/or MLX and prints one JSON line per
measurement on stdout:

    {"case": "matmul_f32_1024", "value": 123.4, "unit": "GFLOPS", "peer": "numpy"}

Diagnostics (BLAS kernel, versions, skipped peers) go to stderr.

Cases (N = 16M = 2**24 elements for the element-wise ones):
  matmul_f32_{256,1024,2048,4096}  C = A @ B, square, GFLOPS = 2 n^3 / t
  matmul_bf16_2048                 same in bfloat16 (torch, mlx only)
  gemv_f32_{in}x{out}              y = x @ W^T with x (1, in) and W stored (out, in) like a linear
                                   layer (as tessera's case does); GB/s = bytes(W) / t.
                                   gemv_f32_4096x4096; gemv_bf16_4096x11008 (W is 11008 x 4096
                                   bf16; torch, mlx only)
  add_f32_16M                      c = a + b;  GB/s = 3 * 4 * N / t (numpy/torch write into out=)
  exp_f32_16M                      b = exp(a); GB/s = 2 * 4 * N / t
  sum_f32_16M                      s = sum(a); GB/s = 4 * N / t
  softmax_f32_4096x4096            softmax over the last axis; GB/s = 2 * 4 * 4096^2 / t (read + write)
  op_overhead_chain100             us/op: 100 chained `x = x + 1.0` (0-d f32 scalar) on 1000 f32
                                   (numpy/torch: 100 eager calls; mlx: build the lazy chain, then mx.eval)

Each value is the median of several timed runs after a warm-up (7 runs, 3 with --quick; the
largest cases run fewer). Threads are pinned to --threads (default 2) via OMP/MKL/OpenBLAS env
vars (set before any import), threadpoolctl when available, and torch.set_num_threads.

Usage: python scripts/bench_peers.py [--peer numpy|torch|mlx|all] [--quick] [--threads 2] [--cases a,b]
"""
import argparse
import json
import os
import statistics
import sys
import time


def _early_args():
    threads = "2"
    for i, a in enumerate(sys.argv):
        if a == "--threads" and i + 1 < len(sys.argv):
            threads = sys.argv[i + 1]
        elif a.startswith("--threads="):
            threads = a.split("=", 1)[1]
    return threads


# Environment must be fixed before numpy/torch/mlx are imported.
_THREADS = _early_args()
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = _THREADS
# These two are set on some of our machines and make current OpenBLAS pick a slow kernel.
for _var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
    os.environ.pop(_var, None)

N16M = 1 << 24
MATMUL_SIZES = (256, 1024, 2048, 4096)
ALL_CASES = [f"matmul_f32_{n}" for n in MATMUL_SIZES] + [
    "matmul_bf16_2048", "gemv_f32_4096x4096", "gemv_bf16_4096x11008", "add_f32_16M", "exp_f32_16M",
    "sum_f32_16M", "softmax_f32_4096x4096", "op_overhead_chain100"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def emit(case, value, unit, peer):
    print(json.dumps({"case": case, "value": round(value, 3), "unit": unit, "peer": peer}), flush=True)


def median_time(fn, repeats, warmup=1, inner=1, min_sample_s=0.02, min_warmup_s=0.2):
    """Median seconds per call of fn.

    Warm-up: at least `warmup` calls and at least `min_warmup_s` seconds (thread pools spin up,
    pages get touched, the CPU clock settles). Each timed sample runs fn `inner` times, raised
    until a sample lasts at least `min_sample_s` so that timer noise stays negligible."""
    t_end = time.perf_counter() + min_warmup_s
    calls = 0
    t_call = 0.0
    while calls < warmup or time.perf_counter() < t_end:
        t0 = time.perf_counter()
        fn()
        t_call = time.perf_counter() - t0
        calls += 1
    if t_call > 0:
        inner = max(inner, int(min_sample_s / t_call) + 1)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples)


def reps_for(case, repeats):
    if case in ("matmul_f32_4096",):
        return max(3, repeats // 2)
    return repeats


# ----------------------------------------------------------------------------------------------
def bench_numpy(cases, repeats):
    import numpy as np

    try:
        from threadpoolctl import threadpool_info, threadpool_limits

        threadpool_limits(int(_THREADS))
        for info in threadpool_info():
            log(f"[numpy] threadpool: {info.get('internal_api')} {info.get('version')} "
                f"arch={info.get('architecture')} threads={info.get('num_threads')} ({info.get('filepath')})")
    except ImportError:
        log("[numpy] threadpoolctl not installed; BLAS config:")
        try:
            cfg = np.show_config(mode="dicts")
            log(f"[numpy] {json.dumps(cfg.get('Build Dependencies', {}).get('blas', {}))}")
        except Exception:  # noqa: BLE001
            pass
    log(f"[numpy] version {np.__version__}")
    rng = np.random.default_rng(0)
    peer = "numpy"
    for case in cases:
        r = reps_for(case, repeats)
        if case.startswith("matmul_f32_"):
            n = int(case.rsplit("_", 1)[1])
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            c = np.empty((n, n), np.float32)
            t = median_time(lambda: np.matmul(a, b, out=c), r)
            emit(case, 2 * n ** 3 / t / 1e9, "GFLOPS", peer)
        elif case == "gemv_f32_4096x4096":
            rows, cols = 4096, 4096
            w = rng.standard_normal((cols, rows), dtype=np.float32)  # (out, in), like a linear layer
            x = rng.standard_normal((1, rows), dtype=np.float32)
            y = np.empty((1, cols), np.float32)
            t = median_time(lambda: np.matmul(x, w.T, out=y), r)
            emit(case, w.nbytes / t / 1e9, "GB/s", peer)
        elif case == "add_f32_16M":
            a = rng.standard_normal(N16M, dtype=np.float32)
            b = rng.standard_normal(N16M, dtype=np.float32)
            c = np.empty_like(a)
            t = median_time(lambda: np.add(a, b, out=c), r)
            emit(case, 3 * 4 * N16M / t / 1e9, "GB/s", peer)
        elif case == "exp_f32_16M":
            a = rng.standard_normal(N16M, dtype=np.float32)
            c = np.empty_like(a)
            t = median_time(lambda: np.exp(a, out=c), r)
            emit(case, 2 * 4 * N16M / t / 1e9, "GB/s", peer)
        elif case == "sum_f32_16M":
            a = rng.standard_normal(N16M, dtype=np.float32)
            t = median_time(lambda: a.sum(), r)
            emit(case, 4 * N16M / t / 1e9, "GB/s", peer)
        elif case == "softmax_f32_4096x4096":
            x = rng.standard_normal((4096, 4096), dtype=np.float32)
            y = np.empty_like(x)

            def softmax():
                m = x.max(axis=-1, keepdims=True)
                np.subtract(x, m, out=y)
                np.exp(y, out=y)
                s = y.sum(axis=-1, keepdims=True)
                np.divide(y, s, out=y)

            t = median_time(softmax, r)
            emit(case, 2 * x.nbytes / t / 1e9, "GB/s", peer)
        elif case == "op_overhead_chain100":
            x = rng.standard_normal(1000, dtype=np.float32)
            one = np.float32(1.0)

            def chain():
                y = x
                for _ in range(100):
                    y = np.add(y, one)
                return y

            t = median_time(chain, max(r, 7), warmup=3)
            emit(case, t / 100 * 1e6, "us/op", peer)
        else:
            log(f"[numpy] {case}: not applicable, skipped")


# ----------------------------------------------------------------------------------------------
def bench_torch(cases, repeats):
    import torch

    torch.set_num_threads(int(_THREADS))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    log(f"[torch] version {torch.__version__}, threads={torch.get_num_threads()}, "
        f"mkldnn={torch.backends.mkldnn.is_available()}, cpu capability={torch.backends.cpu.get_cpu_capability()}")
    g = torch.Generator().manual_seed(0)
    peer = "torch"

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, generator=g, dtype=torch.float32).to(dtype)

    with torch.inference_mode():
        for case in cases:
            r = reps_for(case, repeats)
            if case.startswith("matmul_"):
                dt = torch.bfloat16 if "bf16" in case else torch.float32
                n = int(case.rsplit("_", 1)[1])
                a, b = randn(n, n, dtype=dt), randn(n, n, dtype=dt)
                c = torch.empty(n, n, dtype=dt)
                t = median_time(lambda: torch.matmul(a, b, out=c), r)
                emit(case, 2 * n ** 3 / t / 1e9, "GFLOPS", peer)
            elif case.startswith("gemv_"):
                dt = torch.bfloat16 if "bf16" in case else torch.float32
                rows, cols = (int(v) for v in case.rsplit("_", 1)[1].split("x"))
                w, x = randn(cols, rows, dtype=dt), randn(1, rows, dtype=dt)  # W is (out, in)
                wt = w.t()
                y = torch.empty(1, cols, dtype=dt)
                t = median_time(lambda: torch.matmul(x, wt, out=y), r)
                emit(case, w.numel() * w.element_size() / t / 1e9, "GB/s", peer)
            elif case == "add_f32_16M":
                a, b = randn(N16M), randn(N16M)
                c = torch.empty(N16M)
                t = median_time(lambda: torch.add(a, b, out=c), r)
                emit(case, 3 * 4 * N16M / t / 1e9, "GB/s", peer)
            elif case == "exp_f32_16M":
                a = randn(N16M)
                c = torch.empty(N16M)
                t = median_time(lambda: torch.exp(a, out=c), r)
                emit(case, 2 * 4 * N16M / t / 1e9, "GB/s", peer)
            elif case == "sum_f32_16M":
                a = randn(N16M)
                t = median_time(lambda: a.sum(), r)
                emit(case, 4 * N16M / t / 1e9, "GB/s", peer)
            elif case == "softmax_f32_4096x4096":
                x = randn(4096, 4096)
                y = torch.empty(4096, 4096)
                t = median_time(lambda: torch.softmax(x, -1, out=y), r)
                emit(case, 2 * 4 * 4096 * 4096 / t / 1e9, "GB/s", peer)
            elif case == "op_overhead_chain100":
                x = randn(1000)
                one = torch.tensor(1.0)

                def chain():
                    y = x
                    for _ in range(100):
                        y = torch.add(y, one)
                    return y

                t = median_time(chain, max(r, 7), warmup=3)
                emit(case, t / 100 * 1e6, "us/op", peer)


# ----------------------------------------------------------------------------------------------
def bench_mlx(cases, repeats):
    import mlx.core as mx

    mx.set_default_device(mx.cpu)
    log(f"[mlx] version {mx.__version__}, device={mx.default_device()} "
        f"(MLX's CPU backend manages its own threads; OMP/OpenBLAS vars set to {_THREADS})")
    mx.random.seed(0)
    peer = "mlx"
    for case in cases:
        r = reps_for(case, repeats)
        if case.startswith("matmul_"):
            dt = mx.bfloat16 if "bf16" in case else mx.float32
            n = int(case.rsplit("_", 1)[1])
            a, b = mx.random.normal((n, n)).astype(dt), mx.random.normal((n, n)).astype(dt)
            mx.eval(a, b)
            t = median_time(lambda: mx.eval(a @ b), r)
            emit(case, 2 * n ** 3 / t / 1e9, "GFLOPS", peer)
        elif case.startswith("gemv_"):
            dt = mx.bfloat16 if "bf16" in case else mx.float32
            rows, cols = (int(v) for v in case.rsplit("_", 1)[1].split("x"))
            w, x = mx.random.normal((cols, rows)).astype(dt), mx.random.normal((1, rows)).astype(dt)  # W is (out, in)
            mx.eval(w, x)
            t = median_time(lambda: mx.eval(x @ w.T), r)
            emit(case, w.nbytes / t / 1e9, "GB/s", peer)
        elif case == "add_f32_16M":
            a, b = mx.random.normal((N16M,)), mx.random.normal((N16M,))
            mx.eval(a, b)
            t = median_time(lambda: mx.eval(a + b), r)
            emit(case, 3 * 4 * N16M / t / 1e9, "GB/s", peer)
        elif case == "exp_f32_16M":
            a = mx.random.normal((N16M,))
            mx.eval(a)
            t = median_time(lambda: mx.eval(mx.exp(a)), r)
            emit(case, 2 * 4 * N16M / t / 1e9, "GB/s", peer)
        elif case == "sum_f32_16M":
            a = mx.random.normal((N16M,))
            mx.eval(a)
            t = median_time(lambda: mx.eval(mx.sum(a)), r)
            emit(case, 4 * N16M / t / 1e9, "GB/s", peer)
        elif case == "softmax_f32_4096x4096":
            x = mx.random.normal((4096, 4096))
            mx.eval(x)
            t = median_time(lambda: mx.eval(mx.softmax(x, axis=-1)), r)
            emit(case, 2 * 4 * 4096 * 4096 / t / 1e9, "GB/s", peer)
        elif case == "op_overhead_chain100":
            x = mx.random.normal((1000,))
            one = mx.array(1.0)
            mx.eval(x, one)

            def chain():
                y = x
                for _ in range(100):
                    y = mx.add(y, one)
                mx.eval(y)

            t = median_time(chain, max(r, 7), warmup=3)
            emit(case, t / 100 * 1e6, "us/op", peer)


PEERS = {"numpy": bench_numpy, "torch": bench_torch, "mlx": bench_mlx}
BF16_ONLY = {"matmul_bf16_2048", "gemv_bf16_4096x11008"}


def main():
    ap = argparse.ArgumentParser(description="Peer baselines for tessera bench ops")
    ap.add_argument("--peer", default="all", choices=["numpy", "torch", "mlx", "all"])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (3 instead of 7)")
    ap.add_argument("--threads", default="2", help="threads for every peer (default 2)")
    ap.add_argument("--cases", default="", help="comma-separated subset of case names")
    args = ap.parse_args()
    cases = ALL_CASES
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in ALL_CASES]
        if unknown:
            ap.error(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(ALL_CASES)}")
        cases = [c for c in ALL_CASES if c in wanted]
    repeats = 3 if args.quick else 7
    peers = list(PEERS) if args.peer == "all" else [args.peer]
    for peer in peers:
        peer_cases = [c for c in cases if not (peer == "numpy" and c in BF16_ONLY)]
        try:
            PEERS[peer](peer_cases, repeats)
        except ImportError as e:
            log(f"[{peer}] not available ({e}); skipped")


if __name__ == "__main__":
    main()
