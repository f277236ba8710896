"""The ``tensorrt`` backend's own logic on the CPU, against fakes of ``tensorrt``, ``pycuda.driver``
and the CUDA driver calls: engine cache keying and reuse, batch buckets with zero padding, one
CUDA graph per bucket (captured operations replayed), the plain-enqueue fallback, threads, close.

The fakes compute with the numpy reference MLP, so these tests say nothing about TensorRT or
CUDA themselves (tests/gpu does, with ``--gpu``); they catch mistakes in our code around them."""

from __future__ import annotations

import ctypes
import sys
import threading
import types

import numpy as np
import pytest

from pattern_engine.ml import backends as B
from pattern_engine.ml.metadata import load_bundle
from tests.onnx_models import make_bundle, mlp_reference

N, OUT = 11, 3


class World:
    """Device memory, the capture state and call counters shared by the fakes."""

    def __init__(self):
        self.mem: dict[int, np.ndarray] = {}
        self.recording: list | None = None
        self.graphs: dict[int, list] = {}
        self.calls: dict[str, int] = {}
        self.ctx_stack: dict[int, list] = {}
        self.fail_capture = False

    def count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def op(self, fn) -> None:
        if self.recording is not None:
            self.recording.append(fn)
        else:
            fn()


def fake_pycuda(w: World) -> types.ModuleType:
    m = types.ModuleType("pycuda.driver")

    class Alloc:
        def __init__(self, nbytes):
            self.buf = np.zeros(nbytes, np.uint8)
            w.mem[id(self)] = self.buf

        def __int__(self):
            return id(self)

        def free(self):
            w.count("free")
            w.mem.pop(id(self), None)

    class Ctx:
        def push(self):
            w.ctx_stack.setdefault(threading.get_ident(), []).append(self)

        def pop(self):
            w.ctx_stack[threading.get_ident()].pop()

    class Device:
        def __init__(self, i):
            self.i = i

        def retain_primary_context(self):
            return Ctx()

    class Stream:
        handle = 4242

        def synchronize(self):
            w.count("sync")

    def htod(dst, src, stream):
        def f():
            w.mem[int(dst)][: src.nbytes] = np.ascontiguousarray(src).view(np.uint8).ravel()
        w.op(f)

    def dtoh(dst, src, stream):
        def f():
            dst[...] = w.mem[int(src)][: dst.nbytes].view(np.float32).reshape(dst.shape)
        w.op(f)

    m.init = lambda: None
    m.Device, m.Stream = Device, Stream
    m.pagelocked_zeros = lambda shape, dtype: np.zeros(shape, dtype)
    m.mem_alloc = Alloc
    m.memcpy_htod_async, m.memcpy_dtoh_async = htod, dtoh
    return m


def fake_tensorrt(w: World, input_name: str, output_name: str) -> types.ModuleType:
    t = types.ModuleType("tensorrt")
    t.__version__ = "10.9.0"
    t.float32 = "float32"
    t.nptype = lambda dt: np.float32
    t.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    t.MemoryPoolType = types.SimpleNamespace(WORKSPACE="ws")
    t.BuilderFlag = types.SimpleNamespace(FP16="fp16", TF32="tf32")
    t.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Context:
        def __init__(self):
            self.b, self.addr = None, {}

        def set_input_shape(self, name, shape):
            assert name == input_name and shape[1] == N
            self.b = shape[0]
            return True

        def get_tensor_shape(self, name):
            return (self.b, N if name == input_name else OUT)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            b, src, dst = self.b, self.addr[input_name], self.addr[output_name]
            w.count("enqueue")

            def f():
                x = w.mem[src][: b * N * 4].view(np.float32).reshape(b, N)
                y = mlp_reference(x).astype(np.float32)
                w.mem[dst][: y.nbytes] = y.view(np.uint8).ravel()
            w.op(f)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return (input_name, output_name)[i]

        def get_tensor_mode(self, name):
            return "in" if name == input_name else "out"

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine() if bytes(data).startswith(b"FAKEPLAN") else None

    class Config:
        def __init__(self):
            self.flags = {"tf32"}

        def set_memory_pool_limit(self, pool, size):
            assert size > 0

        def set_flag(self, f):
            self.flags.add(f)

        def clear_flag(self, f):
            self.flags.discard(f)

        def add_optimization_profile(self, p):
            self.profile = p

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            self.shapes = (mn, opt, mx)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            w.count("build")
            w.last_build = (sorted(config.flags), config.profile.shapes)
            return b"FAKEPLAN"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    t.Logger, t.Runtime, t.Builder, t.OnnxParser = Logger, Runtime, Builder, OnnxParser
    return t


class FakeLib:
    def __init__(self, w: World):
        self.w = w

    def cuStreamBeginCapture_v2(self, h, mode):
        assert mode == B._CudaDriver.CAPTURE_THREAD_LOCAL and self.w.recording is None
        self.w.recording = []
        return 0

    def cuStreamEndCapture(self, h, ref):
        ops, self.w.recording = self.w.recording, None
        if self.w.fail_capture:
            return 900  # cudaErrorStreamCaptureInvalidated
        gid = 1000 + len(self.w.graphs)
        self.w.graphs[gid] = ops
        ref._obj.value = gid
        return 0

    def cuGraphInstantiateWithFlags(self, ref, graph, flags):
        ref._obj.value = graph.value + 10**6
        return 0

    def cuGraphLaunch(self, exe, h):
        gid = (exe.value if isinstance(exe, ctypes.c_void_p) else exe) - 10**6
        self.w.count("launch")
        for fn in self.w.graphs[gid]:
            fn()
        return 0

    def cuGraphDestroy(self, g):
        return 0

    def cuGraphExecDestroy(self, e):
        self.w.count("exec_destroy")
        return 0

    def cuGetErrorString(self, rc, ref):
        return 1


@pytest.fixture
def world(monkeypatch, tmp_path):
    meta, path = load_bundle(make_bundle(tmp_path / "bundle"))
    w = World()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(w, meta.input_name, meta.output_name))
    monkeypatch.setitem(sys.modules, "pycuda", types.ModuleType("pycuda"))
    monkeypatch.setitem(sys.modules, "pycuda.driver", fake_pycuda(w))
    drv = object.__new__(B._CudaDriver)
    drv.lib = FakeLib(w)
    drv.gpu_key = lambda device_id: f"fake-h100-sm90-dev{device_id}"
    monkeypatch.setattr(B._CudaDriver, "_instance", drv)
    w.meta, w.path, w.cache = meta, path, tmp_path / "cache"
    return w


def build(w: World, max_batch=100, **opts):
    return B.make_backend("tensorrt", w.path, w.meta, max_batch, cache_dir=str(w.cache), **opts)


@pytest.mark.parametrize("batch", [1, 7, 64, 100])
def test_fake_tensorrt_matches_the_reference_through_graphs(world, batch):
    b = build(world)
    x = B.parity_inputs(world.meta)
    launches = world.calls.get("launch", 0)
    assert B.parity(b, mlp_reference, x, batch) <= 1e-6
    assert world.calls["launch"] > launches  # graphs ran, not plain enqueues
    b.close()


def test_every_bucket_gets_a_graph_and_padding_rows_are_zero(world):
    b = build(world)
    assert sorted(b._graphs) == [1, 2, 4, 8, 16, 32, 64, 100]
    enqueues = world.calls["enqueue"]
    x = np.random.default_rng(0).normal(size=(5, N)).astype(np.float32)
    b.run(np.ones((8, N), np.float32))
    out = b.run(x)  # bucket 8: rows 5..7 must not keep the ones of the previous call
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out, mlp_reference(x), atol=1e-6)
    assert (b._h_in[5:8] == 0).all()
    assert world.calls["enqueue"] == enqueues  # replayed from graphs only
    with pytest.raises(ValueError):
        out[0, 0] = 1.0
    b.close()


def test_engine_is_built_once_then_loaded_and_keyed(world):
    b = build(world, max_batch=100)
    p = b.engine_path
    assert p.parent.name == "fake-h100-sm90-dev0-trt10.9.0"
    assert p.name == f"{world.meta.onnx_sha256}-b100-o64-fp32.plan" and p.read_bytes() == b"FAKEPLAN"
    assert world.last_build == ([], ((1, N), (64, N), (100, N)))  # TF32 cleared, profile 1 / 64 / max
    b.close()
    build(world, max_batch=100).close()
    assert world.calls["build"] == 1
    other = build(world, max_batch=32, fp16=True)
    assert other.engine_path.name.endswith("-b32-o32-fp16.plan") and world.calls["build"] == 2
    assert world.last_build[0] == ["fp16"] and other.parity_atol == 1e-2
    other.close()


def test_a_corrupt_cached_engine_is_rebuilt(world):
    build(world).close()
    p = next(world.cache.rglob("*.plan"))
    p.write_bytes(b"garbage")
    b = build(world)
    assert world.calls["build"] == 2 and p.read_bytes() == b"FAKEPLAN"
    b.close()


def test_failed_capture_falls_back_to_plain_enqueue(world):
    world.fail_capture = True
    b = build(world)
    assert b._graphs == {}
    x = np.random.default_rng(1).normal(size=(33, N)).astype(np.float32)
    np.testing.assert_allclose(b.run(x), mlp_reference(x), atol=1e-6)
    b.close()


def test_without_cuda_graphs_outputs_are_the_same(world):
    plain, graphs = build(world, cuda_graphs=False), build(world)
    assert plain._graphs == {}
    x = B.parity_inputs(world.meta)[:100]
    for k in (1, 3, 64, 65, 100):
        np.testing.assert_array_equal(plain.run(x[:k]).copy(), graphs.run(x[:k]))
    plain.close()
    graphs.close()


def test_run_from_another_thread_pushes_and_pops_the_context(world):
    b = build(world)
    x = np.random.default_rng(2).normal(size=(4, N)).astype(np.float32)
    seen = []

    def call():
        seen.append(b.run(x).copy())
        seen.append(len(world.ctx_stack[threading.get_ident()]))

    t = threading.Thread(target=call)
    t.start()
    t.join()
    np.testing.assert_allclose(seen[0], mlp_reference(x), atol=1e-6)
    assert seen[1] == 0
    b.close()


def test_close_frees_graphs_and_device_memory_and_is_idempotent(world):
    b = build(world)
    graphs = len(b._graphs)
    b.close()
    b.close()
    assert world.calls["exec_destroy"] == graphs and world.calls["free"] == 2
    assert world.ctx_stack[threading.get_ident()] == []
    with pytest.raises(RuntimeError, match="closed"):
        b.run(np.zeros((1, N), np.float32))


def test_bad_width_never_reaches_the_engine(world):
    b = build(world)
    enqueues, launches = world.calls["enqueue"], world.calls.get("launch", 0)
    with pytest.raises(ValueError, match=r"\[k, 11\]"):
        b.run(np.zeros((2, 12), np.float32))
    assert (world.calls["enqueue"], world.calls.get("launch", 0)) == (enqueues, launches)
    b.close()
