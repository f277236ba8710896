"""Inference backends on the CPU: parity with the numpy reference, input checks, buffer reuse,
clear errors for unknown / unavailable backends and unusable model files, ``auto`` selection.

GPU backends run in tests/gpu/test_gpu_backends.py (``--gpu``)."""

from __future__ import annotations

import ctypes.util
import sys
import time

import numpy as np
import pytest

from pattern_engine.ml import backends as B
from pattern_engine.ml.backends import BackendUnavailable, make_backend, parity, parity_inputs
from pattern_engine.ml.metadata import BundleError, ModelMetadata, load_bundle, save_bundle
from tests.onnx_models import DEFAULT_FEATURES, make_bundle, mlp_onnx, mlp_reference

MAX = 96


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    meta, path = load_bundle(make_bundle(tmp_path_factory.mktemp("b")))
    return meta, path


@pytest.fixture(scope="module")
def cpu(bundle):
    meta, path = bundle
    b = make_backend("cpu", path, meta, MAX)
    yield b
    b.close()


def rows(k: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(k, len(DEFAULT_FEATURES))).astype(np.float32)


@pytest.mark.parametrize("batch", [1, 7, 64, MAX])
def test_cpu_matches_numpy_reference_on_the_parity_set(cpu, bundle, batch):
    meta, _ = bundle
    x = parity_inputs(meta)
    diff = parity(cpu, mlp_reference, x, batch)
    assert diff <= cpu.parity_atol == 1e-5


def test_parity_inputs_hold_random_and_edge_rows(bundle):
    meta, _ = bundle
    x = parity_inputs(meta, n_random=10)
    n, c = len(meta.features), meta.clip
    assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1] == n
    assert np.abs(x[:10]).max() <= c
    for edge in (np.zeros(n), np.full(n, c), np.full(n, -c), np.full(n, 10 * c)):
        assert (x == edge.astype(np.float32)).all(axis=1).any()


def test_parity_reports_the_largest_difference(cpu):
    x = rows(50)
    assert parity(cpu, lambda c: mlp_reference(c) + 1e-3, x) == pytest.approx(1e-3, abs=1e-5)
    assert parity(cpu, lambda c: np.full((len(c), 3), np.nan), x) == float("inf")


def test_output_shape_and_values_for_every_batch_size(cpu):
    x = rows(MAX)
    want = mlp_reference(x)
    for k in range(1, MAX + 1):
        out = cpu.run(x[:k])
        assert out.shape == (k, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, want[:k], atol=1e-5)


def test_a_copied_result_survives_the_next_run(cpu):
    x1, x2 = rows(8, seed=2), rows(8, seed=3)
    kept = cpu.run(x1).copy()
    view = cpu.run(x1)
    cpu.run(x2)
    np.testing.assert_allclose(kept, mlp_reference(x1), atol=1e-5)
    np.testing.assert_allclose(view, mlp_reference(x2), atol=1e-5)  # the documented reuse
    with pytest.raises(ValueError):
        view[0, 0] = 1.0  # read-only: a caller cannot scribble into the backend's buffer


def test_inputs_numpy_can_cast_or_view_are_accepted(cpu):
    x = rows(5)
    want = cpu.run(x).copy()
    np.testing.assert_array_equal(cpu.run(x.astype(np.float64)), want)
    np.testing.assert_array_equal(cpu.run(np.asfortranarray(x)), want)
    np.testing.assert_array_equal(cpu.run(np.repeat(x, 2, axis=0)[::2]), want)


@pytest.mark.parametrize(
    "x, shown",
    [
        (np.zeros((3, 10), np.float32), "got shape (3, 10)"),
        (np.zeros((3, 12), np.float32), "got shape (3, 12)"),
        (np.zeros(11, np.float32), "got shape (11,)"),
        (np.zeros((0, 11), np.float32), "got shape (0, 11)"),
        (np.zeros((MAX + 1, 11), np.float32), f"got shape ({MAX + 1}, 11)"),
        (np.zeros((2, 11, 1), np.float32), "got shape (2, 11, 1)"),
    ],
)
def test_bad_input_shapes_are_refused_with_the_shape(cpu, x, shown):
    with pytest.raises(ValueError) as e:
        cpu.run(x)
    assert "[k, 11]" in str(e.value) and shown in str(e.value) and f"({MAX})" in str(e.value)


def test_unknown_backend_name_lists_the_known_ones(bundle):
    meta, path = bundle
    with pytest.raises(BackendUnavailable, match=r"unknown backend 'cuda'.*cpu, ort-cuda, ort-tensorrt, tensorrt, auto"):
        make_backend("cuda", path, meta)


def test_unknown_option_is_refused_but_gpu_options_pass_through_cpu(bundle):
    meta, path = bundle
    with pytest.raises(ValueError, match=r"unknown backend option\(s\) \['fp61'\]"):
        make_backend("cpu", path, meta, 8, fp61=True)
    b = make_backend("cpu", path, meta, 8, device_id=1, fp16=True, cache_dir="/nonexistent")
    assert b.run(rows(2)).shape == (2, 3)


@pytest.mark.parametrize("name, provider", [("ort-cuda", "CUDAExecutionProvider"),
                                            ("ort-tensorrt", "TensorrtExecutionProvider")])
def test_missing_provider_names_it_and_how_to_install(bundle, monkeypatch, name, provider):
    import onnxruntime

    meta, path = bundle
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(BackendUnavailable) as e:
        make_backend(name, path, meta)
    assert f"no {provider}" in str(e.value) and "pip install 'aitrader[gpu]'" in str(e.value)


def test_missing_tensorrt_package_says_so(bundle, monkeypatch):
    meta, path = bundle
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt → ImportError
    with pytest.raises(BackendUnavailable, match=r"TensorRT .* not installed.*pip install 'aitrader\[gpu\]'"):
        make_backend("tensorrt", path, meta)


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="this machine has an NVIDIA driver")
def test_gpu_provider_without_a_driver_says_there_is_no_gpu(bundle, monkeypatch):
    import onnxruntime

    meta, path = bundle
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(B._CudaDriver, "_instance", None)
    with pytest.raises(BackendUnavailable, match="no NVIDIA driver"):
        make_backend("ort-cuda", path, meta)


def test_a_file_that_is_not_onnx_is_a_bundle_error_naming_it(bundle, tmp_path):
    meta, _ = bundle
    bad = tmp_path / "model.onnx"
    for content in (b"\x00\xffnot an onnx model at all\x13\x37" * 7, mlp_onnx(11)[:200]):
        bad.write_bytes(content)
        with pytest.raises(BundleError, match=str(bad)):
            make_backend("cpu", bad, meta)
    bad.unlink()
    with pytest.raises(BundleError, match="cannot read"):
        make_backend("cpu", bad, meta)


def test_a_model_that_disagrees_with_its_metadata_is_refused(tmp_path):
    meta = ModelMetadata(name="m", version="1", features=list(DEFAULT_FEATURES), mean=[0.0] * 11,
                         scale=[1.0] * 11, classes=[-1, 0, 1])
    save_bundle(tmp_path / "narrow", meta, mlp_onnx(10))
    with pytest.raises(BundleError, match="width 10; model.json lists 11 features"):
        make_backend("cpu", tmp_path / "narrow" / "model.onnx", meta)
    save_bundle(tmp_path / "binary", meta, mlp_onnx(11, n_out=2))
    with pytest.raises(BundleError, match="width 2; model.json lists 3 classes"):
        make_backend("cpu", tmp_path / "binary" / "model.onnx", meta)
    renamed = meta.model_copy(update={"input_name": "x"})
    with pytest.raises(BundleError, match=r"inputs are \['input'\]; model.json says one input named 'x'"):
        make_backend("cpu", tmp_path / "binary" / "model.onnx", renamed)


def test_closed_backend_refuses_to_run(bundle):
    meta, path = bundle
    b = make_backend("cpu", path, meta, 4)
    b.run(rows(2))
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.run(rows(2))


def test_auto_measures_what_is_available_and_falls_back_to_cpu(bundle):
    meta, path = bundle
    t0 = time.perf_counter()
    b, table = B.select_backend(path, meta, MAX)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0
    assert [r["backend"] for r in table] == list(B.AUTO_ORDER)
    cpu_row = table[0]
    assert cpu_row["available"] and cpu_row["p99_1_us"] >= cpu_row["p50_1_us"] > 0
    assert cpu_row["score_us"] == pytest.approx(cpu_row["p99_1_us"] + cpu_row["p99_typ_us"])
    assert sum(r.get("chosen", False) for r in table) == 1
    for r in table:
        assert r["available"] or r["reason"]
    x = rows(5)
    np.testing.assert_allclose(b.run(x), mlp_reference(x), atol=b.parity_atol)
    assert "chosen" in B.format_selection(table)
    b.close()
    auto = make_backend("auto", path, meta, MAX)
    assert auto.run(x).shape == (5, 3)


class _Fake(B.InferenceBackend):
    options = frozenset({"device_id"})

    def run(self, x):
        return np.zeros((len(x), self.n_outputs), np.float32)


def _register_fakes(monkeypatch, scores: dict[str, float]):
    closed = []
    for name in scores:
        cls = type(f"Fake_{name}", (_Fake,), {"name": name, "close": lambda self: closed.append(self.name)})
        monkeypatch.setitem(B.BACKENDS, name, cls)
    # score = p99(1) + p99(B): give each fake half its score at both sizes
    monkeypatch.setattr(B, "latency", lambda b, x, calls=300, warmup=30: {
        "p50_us": scores[b.name] / 2, "p99_us": scores[b.name] / 2, "mean_us": scores[b.name] / 2})
    return closed


def test_auto_picks_the_lowest_tail_and_closes_the_others(bundle, monkeypatch):
    meta, path = bundle
    closed = _register_fakes(monkeypatch, {"slow": 20.0, "fast": 10.0, "mid": 15.0})
    b, table = B.select_backend(path, meta, 8, candidates=("slow", "fast", "mid"))
    assert b.name == "fast" and [r["chosen"] for r in table] == [False, True, False]
    assert sorted(closed) == ["mid", "slow"]


def test_auto_tie_within_five_percent_goes_to_the_earlier_candidate(bundle, monkeypatch):
    meta, path = bundle
    _register_fakes(monkeypatch, {"simple": 10.4, "fancy": 10.0})
    b, _ = B.select_backend(path, meta, 8, candidates=("simple", "fancy"))
    assert b.name == "simple"
    _register_fakes(monkeypatch, {"simple": 10.6, "fancy": 10.0})
    b, _ = B.select_backend(path, meta, 8, candidates=("simple", "fancy"))
    assert b.name == "fancy"


def test_auto_lists_an_unavailable_candidate_with_its_reason(bundle, monkeypatch):
    meta, path = bundle

    class Broken(_Fake):
        name = "broken"

        def __init__(self, *a, **k):
            raise BackendUnavailable("no such GPU")

    monkeypatch.setitem(B.BACKENDS, "broken", Broken)
    b, table = B.select_backend(path, meta, 8, candidates=("broken", "cpu"))
    assert b.name == "cpu"
    assert table[0] == {"backend": "broken", "available": False, "reason": "no such GPU", "chosen": False}


def test_buckets_cover_every_batch_size():
    assert B._buckets(1) == [1]
    assert B._buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert B._buckets(100) == [1, 2, 4, 8, 16, 32, 64, 100]
