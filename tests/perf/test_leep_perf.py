"""Pixel-LEEP throughput: streaming torch vs a per-sample numpy loop vs one read of the inputs.

Run: python -m pytest tests/perf/test_leep_perf.py --benchmark-only -q -s
Ratios are against references timed in the same test (best of several runs), never against fixed numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from methods import transferability as tr

N_PIXELS = 10**7  # (160, 4, 250, 250) float32 probabilities, int64 labels
SHAPE = (160, 250, 250)
K = C = 4
SUBSAMPLE = 10**5  # the per-sample numpy loop runs on this many pixels and is scaled linearly
GPU_PIXELS = 10**8


def make_data(
    shape: tuple[int, ...], device: str = "cpu", seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator(device).manual_seed(seed)
    labels = torch.randint(0, C, shape, generator=gen, device=device)
    logits = torch.randn((shape[0], K, *shape[1:]), generator=gen, device=device)
    logits += 2 * torch.nn.functional.one_hot(labels, K).movedim(-1, 1)  # source and target classes related
    return torch.softmax(logits, 1), labels


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    return make_data(SHAPE)


def one_read(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference (c): one read of the inputs."""
    return probs.sum(), labels.sum()


def numpy_leep(probs_nk: np.ndarray, labels: np.ndarray) -> float:
    """Reference (b): LEEP written the way common transfer-learning libraries write it (Transfer-Learning-
    Library, tllib/ranking/leep.py): per-class masked sums, then a per-sample Python loop."""
    n, k = probs_nk.shape
    normalized = probs_nk / float(n)
    joint = np.zeros((int(labels.max()) + 1, k))
    for i in range(joint.shape[0]):
        joint[i] = np.sum(normalized[labels == i], axis=0)
    p_target_given_source = (joint / joint.sum(axis=0, keepdims=True)).T
    empirical_prediction = probs_nk @ p_target_given_source
    empirical_prob = np.array([pred[y] for pred, y in zip(empirical_prediction, labels)])
    return float(np.mean(np.log(empirical_prob)))


def numpy_subsample(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """(b) on the first SUBSAMPLE pixels, including the channel-first -> (N, K) layout change."""
    images = -(-SUBSAMPLE // labels[0].numel())
    probs_nk = np.moveaxis(probs[:images].numpy(), 1, -1).reshape(-1, K)[:SUBSAMPLE]
    return numpy_leep(probs_nk, labels[:images].numpy().reshape(-1)[:SUBSAMPLE])


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def report(benchmark, name: str, probs: torch.Tensor, labels: torch.Tensor, **extra: float) -> None:
    """Put (a)/(b) and (a)/(c) in extra_info and print them; (b) and (c) are timed here, in the same run."""
    a = benchmark.stats.stats.min
    c = best_of(lambda: one_read(probs, labels), 7)
    b = best_of(lambda: numpy_subsample(probs, labels), 3) * N_PIXELS / SUBSAMPLE
    info = {"a_s": a, "b_numpy_scaled_s": b, "c_one_read_s": c, "a_over_b": a / b, "a_over_c": a / c, **extra}
    benchmark.extra_info.update(info)
    print(
        f"\n[{name}] N=1e7 K=C=4: a={a * 1e3:.1f} ms, b={b:.2f} s (numpy per-sample loop timed on "
        f"{SUBSAMPLE:.0e} pixels, scaled x{N_PIXELS // SUBSAMPLE}), c={c * 1e3:.1f} ms (one read); "
        f"a/b={a / b:.4f} ({b / a:.0f}x faster, target >= 100x), a/c={a / c:.2f} (target <= 3)"
        + "".join(f", {k}={v:.3g}" for k, v in extra.items())
    )


def run_leep(benchmark, probs: torch.Tensor, labels: torch.Tensor, compile: bool) -> float:
    return benchmark.pedantic(
        tr.segmentation_leep,
        args=(probs, labels, C),
        kwargs={"validate": False, "compile": compile},
        rounds=7,
        warmup_rounds=1,
    )


def test_c_one_read(benchmark, data):
    benchmark.pedantic(one_read, args=data, rounds=7, warmup_rounds=1)


def test_b_numpy_per_sample_loop(benchmark, data):
    benchmark.pedantic(numpy_subsample, args=data, rounds=3, warmup_rounds=1)
    scaled = benchmark.stats.stats.min * N_PIXELS / SUBSAMPLE
    benchmark.extra_info.update({"pixels_timed": SUBSAMPLE, "scaled_to_1e7_s": scaled})
    print(f"\n[numpy per-sample loop] {SUBSAMPLE:.0e} pixels timed, scaled linearly to 1e7: {scaled:.2f} s")


def test_a_torch_eager(benchmark, data):
    probs, labels = data
    leep = run_leep(benchmark, probs, labels, compile=False)
    exact = tr.segmentation_leep(probs.double(), labels, C, validate=False, compile=False)
    report(benchmark, "torch eager", probs, labels, abs_error_vs_float64=abs(leep - exact))


def test_a_torch_compiled(benchmark, data):
    probs, labels = data
    start = time.perf_counter()
    leep = tr.segmentation_leep(probs, labels, C, validate=False, compile=True)  # compiles (not timed)
    compile_s = time.perf_counter() - start
    exact = tr.segmentation_leep(probs.double(), labels, C, validate=False, compile=False)
    run_leep(benchmark, probs, labels, compile=True)
    report(
        benchmark,
        "torch compiled",
        probs,
        labels,
        compile_s=compile_s,
        abs_error_vs_float64=abs(leep - exact),
    )


def test_a_torch_eager_validated(benchmark, data):
    probs, labels = data
    benchmark.pedantic(tr.segmentation_leep, args=(probs, labels, C), rounds=5, warmup_rounds=1)
    report(benchmark, "torch eager, validate=True", probs, labels)


def _peak_rss_growth_kib(fn: Callable[[], object]) -> int:
    """Peak resident-set growth while fn runs (Linux: reset VmHWM through /proc/self/clear_refs)."""

    def field(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
        raise KeyError(name)

    Path("/proc/self/clear_refs").write_text("5")
    before = field("VmRSS:")
    fn()
    return field("VmHWM:") - before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc peak-RSS reset")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_a_peak_memory_does_not_grow_with_n(benchmark, data, compile):
    probs, labels = data
    small = (probs[:16].clone(), labels[:16].clone())  # 10^6 pixels
    growth = {}
    for name, (p, y) in {"1e6": small, "1e7": (probs, labels)}.items():
        tr.segmentation_leep(p, y, C, validate=False, compile=compile)  # warm (allocator, compile)
        growth[name] = _peak_rss_growth_kib(
            lambda p=p, y=y: tr.segmentation_leep(p, y, C, validate=False, compile=compile)
        )
    benchmark.extra_info.update({f"peak_extra_kib_{k}": v for k, v in growth.items()})
    benchmark.pedantic(lambda: None, rounds=1)
    input_kib = (probs.nbytes + labels.nbytes) // 1024
    print(
        f"\n[peak extra memory, {'compiled' if compile else 'eager'}] N=1e6: {growth['1e6']} KiB, "
        f"N=1e7: {growth['1e7']} KiB (inputs: {input_kib} KiB)"
    )
    assert growth["1e7"] < growth["1e6"] + 16 * 1024  # bounded by the block buffers, not by N


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_gpu_leep_bandwidth(benchmark, compile):
    probs, labels = make_data((GPU_PIXELS // 250**2, 250, 250), device="cuda")
    nbytes = probs.nbytes + labels.nbytes
    scratch = torch.empty_like(probs)

    def copy() -> None:
        scratch.copy_(probs)
        torch.cuda.synchronize()

    copy_gbs = 2 * probs.nbytes / best_of(copy, 10) / 1e9  # read + write
    read_s = best_of(lambda: [t.item() for t in one_read(probs, labels)], 10)
    tr.segmentation_leep(probs, labels, C, validate=False, compile=compile)  # warm / compile
    benchmark.pedantic(
        tr.segmentation_leep,
        args=(probs, labels, C),
        kwargs={"validate": False, "compile": compile},
        rounds=10,
    )
    a = benchmark.stats.stats.min
    info = {"input_gb_per_s": nbytes / a / 1e9, "copy_gb_per_s": copy_gbs, "a_over_one_read": a / read_s}
    benchmark.extra_info.update(info)
    print(
        f"\n[GPU {'compiled' if compile else 'eager'}] N=1e8: {a * 1e3:.1f} ms, inputs/time "
        f"{info['input_gb_per_s']:.0f} GB/s (two passes over them), device copy {copy_gbs:.0f} GB/s, "
        f"one read {read_s * 1e3:.1f} ms, a/one-read {info['a_over_one_read']:.2f}"
    )
