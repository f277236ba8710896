"""GPU inference backends against CPU ONNX Runtime (opt-in: ``pytest --gpu tests/gpu``).

A backend this machine cannot build (library or provider missing) is skipped with the reason
``BackendUnavailable`` gives; everything it builds must match CPU ONNX Runtime within its
``parity_atol`` on the parity set at batch sizes 1, 7, 64 and ``max_batch``."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from pattern_engine.ml import backends as B
from pattern_engine.ml.backends import BackendUnavailable, make_backend, parity, parity_inputs
from pattern_engine.ml.metadata import load_bundle
from tests.onnx_models import make_bundle

pytestmark = pytest.mark.gpu

MAX = 256
GPU_BACKENDS = ("ort-cuda", "ort-tensorrt", "tensorrt")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return load_bundle(make_bundle(tmp_path_factory.mktemp("b")))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("trt-cache")


@pytest.fixture(scope="module")
def cpu(bundle):
    meta, path = bundle
    b = make_backend("cpu", path, meta, MAX)
    yield b
    b.close()


def build(name, bundle, cache_dir, **opts):
    meta, path = bundle
    try:
        return make_backend(name, path, meta, MAX, cache_dir=str(cache_dir), **opts)
    except BackendUnavailable as e:
        pytest.skip(f"{name}: {e}")


@pytest.fixture(scope="module", params=GPU_BACKENDS)
def gpu(request, bundle, cache_dir):
    b = build(request.param, bundle, cache_dir)
    yield b
    b.close()


@pytest.mark.parametrize("batch", [1, 7, 64, MAX])
def test_gpu_backend_matches_cpu_onnxruntime(gpu, cpu, bundle, batch):
    meta, _ = bundle
    diff = parity(gpu, cpu, parity_inputs(meta), batch)
    assert diff <= gpu.parity_atol, f"{gpu.describe()}: max |Δ| {diff:.3g} > {gpu.parity_atol}"


def test_gpu_output_shapes_for_batch_sizes_in_and_between_buckets(gpu, cpu):
    x = np.random.default_rng(5).normal(size=(MAX, 11)).astype(np.float32)
    for k in (1, 2, 3, 5, 31, 32, 33, 100, 129, MAX - 1, MAX):
        out = gpu.run(x[:k])
        assert out.shape == (k, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, cpu.run(x[:k]), atol=gpu.parity_atol)


def test_gpu_copied_result_survives_the_next_run(gpu, cpu):
    rng = np.random.default_rng(6)
    x1, x2 = (rng.normal(size=(9, 11)).astype(np.float32) for _ in range(2))
    kept = gpu.run(x1).copy()
    gpu.run(x2)
    np.testing.assert_allclose(kept, cpu.run(x1), atol=gpu.parity_atol)


def test_gpu_bad_width_is_a_value_error(gpu):
    with pytest.raises(ValueError, match=r"\[k, 11\]"):
        gpu.run(np.zeros((2, 10), np.float32))


def test_gpu_backend_runs_from_another_thread(gpu, cpu):
    x = np.random.default_rng(7).normal(size=(16, 11)).astype(np.float32)
    got: list[np.ndarray] = []
    t = threading.Thread(target=lambda: got.append(gpu.run(x).copy()))
    t.start()
    t.join()
    np.testing.assert_allclose(got[0], cpu.run(x), atol=gpu.parity_atol)


def test_tensorrt_engine_is_cached_and_keyed(bundle, cache_dir):
    first = build("tensorrt", bundle, cache_dir)
    path = first.engine_path
    assert path.is_file() and path.is_relative_to(cache_dir)
    assert first._graphs, "no CUDA graph was captured for any batch bucket"
    first.close()
    mtime = path.stat().st_mtime_ns
    again = build("tensorrt", bundle, cache_dir)
    assert again.engine_path == path and path.stat().st_mtime_ns == mtime  # loaded, not rebuilt
    again.close()
    meta, onnx = bundle
    other = make_backend("tensorrt", onnx, meta, 64, cache_dir=str(cache_dir))
    assert other.engine_path != path and "-b64-" in other.engine_path.name
    other.close()


def test_tensorrt_without_cuda_graphs_gives_the_same_outputs(bundle, cache_dir, cpu):
    meta, _ = bundle
    plain = build("tensorrt", bundle, cache_dir, cuda_graphs=False)
    graphs = build("tensorrt", bundle, cache_dir)
    x = parity_inputs(meta)[:MAX]
    for k in (1, 7, 64, MAX):
        np.testing.assert_array_equal(plain.run(x[:k]).copy(), graphs.run(x[:k]))
    plain.close()
    graphs.close()


def test_tensorrt_fp16_within_its_looser_tolerance(bundle, cache_dir, cpu):
    meta, _ = bundle
    b = build("tensorrt", bundle, cache_dir, fp16=True)
    assert b.parity_atol == 1e-2 and "fp16" in b.engine_path.name
    assert parity(b, cpu, parity_inputs(meta), 64) <= b.parity_atol
    b.close()


def test_closed_tensorrt_backend_refuses_to_run(bundle, cache_dir):
    b = build("tensorrt", bundle, cache_dir)
    b.close()
    b.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        b.run(np.zeros((1, 11), np.float32))


def test_auto_on_a_gpu_machine_measures_every_backend(bundle, cache_dir):
    meta, path = bundle
    b, table = B.select_backend(path, meta, MAX, cache_dir=str(cache_dir))
    print("\n" + B.format_selection(table))
    assert any(r["chosen"] for r in table) and table[0]["available"]
    b.close()
