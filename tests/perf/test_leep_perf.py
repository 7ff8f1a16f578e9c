"""Pixel-LEEP throughput: streaming torch vs a per-sample numpy loop vs one read of the inputs.

Run: python -m pytest tests/perf/test_leep_perf.py --benchmark-only -q -s
Ratios use a, b and c re-timed in the same test in interleaved rounds (best of each), never fixed numbers.
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


def make_data(shape: tuple[int, ...], device: str = "cpu", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
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


def interleaved_min(fns: list[Callable[[], object]], rounds: int) -> list[float]:
    """Best time of each fn over rounds that alternate between them, so load changes hit all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for fn, spent in zip(fns, times):
            start = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def report(benchmark, name: str, a_fn: Callable[[], object], data: tuple[torch.Tensor, ...], **extra) -> None:
    """Ratios (a)/(b) and (a)/(c) into extra_info, printed; a, b and c are re-timed here, interleaved."""
    a, c, b = interleaved_min([a_fn, lambda: one_read(*data), lambda: numpy_subsample(*data)], rounds=5)
    b *= N_PIXELS / SUBSAMPLE
    info = {"a_s": a, "b_numpy_scaled_s": b, "c_one_read_s": c, "a_over_b": a / b, "a_over_c": a / c, **extra}
    benchmark.extra_info.update(info)
    print(
        f"\n[{name}] N=1e7 K=C=4, best of 5 interleaved rounds: a={a * 1e3:.1f} ms "
        f"(benchmark min {benchmark.stats.stats.min * 1e3:.1f} ms), b={b:.2f} s (numpy per-sample loop timed "
        f"on {SUBSAMPLE:.0e} pixels, scaled x{N_PIXELS // SUBSAMPLE}), c={c * 1e3:.1f} ms (one read); "
        f"a/b={a / b:.4f} ({b / a:.0f}x faster, target >= 100x), a/c={a / c:.2f} (target <= 3)"
        + "".join(f", {k}={v:.3g}" for k, v in extra.items())
    )


def leep_of(data: tuple[torch.Tensor, torch.Tensor], compile: bool) -> float:
    """(a): the streaming torch code, joint + conditional + LEEP (the hot-loop form: validate=False)."""
    return tr.segmentation_leep(*data, C, validate=False, compile=compile)


def run_leep(benchmark, data: tuple[torch.Tensor, torch.Tensor], compile: bool) -> float:
    return benchmark.pedantic(leep_of, args=(data, compile), rounds=7, warmup_rounds=1)


def _peak_rss_growth_kib(fn: Callable[[], object]) -> int:
    """Peak resident-set growth while fn runs (Linux: VmHWM reset through /proc/self/clear_refs)."""

    def field(name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1])
        raise KeyError(name)

    Path("/proc/self/clear_refs").write_text("5")
    before = field("VmRSS:")
    fn()
    return field("VmHWM:") - before


def peak_memory(probs: torch.Tensor, labels: torch.Tensor, compile: bool) -> dict[str, float]:
    """Peak extra memory (KiB) of one LEEP over 1e6 and over 1e7 pixels; it must not grow with N."""
    if not Path("/proc/self/clear_refs").exists():
        return {}
    growth = {}
    for name, (p, y) in {"1e6": (probs[:16].clone(), labels[:16].clone()), "1e7": (probs, labels)}.items():
        growth[f"peak_extra_kib_{name}"] = _peak_rss_growth_kib(
            lambda p=p, y=y: tr.segmentation_leep(p, y, C, validate=False, compile=compile)
        )
    # an O(N) float32 temporary would add ~35 MiB between 1e6 and 1e7 pixels
    assert growth["peak_extra_kib_1e7"] < growth["peak_extra_kib_1e6"] + 16 * 1024, growth
    return growth


def test_c_one_read(benchmark, data):
    benchmark.pedantic(one_read, args=data, rounds=7, warmup_rounds=1)


def test_b_numpy_per_sample_loop(benchmark, data):
    benchmark.pedantic(numpy_subsample, args=data, rounds=3, warmup_rounds=1)
    scaled = benchmark.stats.stats.min * N_PIXELS / SUBSAMPLE
    benchmark.extra_info.update({"pixels_timed": SUBSAMPLE, "scaled_to_1e7_s": scaled})
    print(f"\n[numpy per-sample loop] {SUBSAMPLE:.0e} pixels timed, scaled linearly to 1e7: {scaled:.2f} s")


def test_a_torch_eager(benchmark, data):
    leep = run_leep(benchmark, data, compile=False)
    exact = leep_of((data[0].double(), data[1]), compile=False)
    extra = {"abs_error_vs_float64": abs(leep - exact), **peak_memory(*data, compile=False)}
    report(benchmark, "torch eager", lambda: leep_of(data, compile=False), data, **extra)


def test_a_torch_compiled(benchmark, data):
    start = time.perf_counter()
    leep = leep_of(data, compile=True)  # compiles (not timed)
    compile_s = time.perf_counter() - start
    exact = leep_of((data[0].double(), data[1]), compile=False)
    run_leep(benchmark, data, compile=True)
    extra = {
        "compile_s": compile_s,
        "abs_error_vs_float64": abs(leep - exact),
        **peak_memory(*data, compile=True),
    }
    report(benchmark, "torch compiled", lambda: leep_of(data, compile=True), data, **extra)


def test_a_torch_eager_validated(benchmark, data):
    probs, labels = data
    benchmark.pedantic(tr.segmentation_leep, args=(probs, labels, C), rounds=5, warmup_rounds=1)
    report(benchmark, "torch eager, validate=True", lambda: tr.segmentation_leep(probs, labels, C), data)


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
