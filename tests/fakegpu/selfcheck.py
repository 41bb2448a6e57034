"""Self-check of the fake CuPy and the launcher routing: ``cd tests && python fakegpu/selfcheck.py``.
Small and single-process; prints one line per check and exits non-zero on the first failure."""
import os
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

import cupy as cp  # noqa: E402
import cupyx  # noqa: E402


def raises(exc, fn, match=""):
    try:
        fn()
    except exc as e:
        assert match in str(e), f"{exc.__name__} without {match!r}: {e}"
        return
    raise AssertionError(f"no {exc.__name__}")


def check(name):
    def deco(fn):
        fn()
        print(f"ok  {name}")
    return deco


h = np.arange(6, dtype=np.float32).reshape(2, 3)
d = cp.asarray(h)


@check("fake arrays are cupy.ndarray of module cupy; hpr sees them as device arrays")
def _():
    from hpr.device import is_device_array
    assert type(d).__module__ == "cupy" and isinstance(d, cp.ndarray) and is_device_array(d)
    assert not is_device_array(h)
    assert cp.get_array_module(d) is cp and cp.get_array_module(h) is np
    assert np.dtype(cp.float32) == np.float32 and cp.complex64 is np.complex64 and cp.dtype is np.dtype


@check("mixing host and device arrays raises TypeError (+, np.add, np.matmul(out=), +=, cupy.exp(host))")
def _():
    m = "Unsupported type <class 'numpy.ndarray'>"
    raises(TypeError, lambda: d + h, m)
    raises(TypeError, lambda: h + d, m)
    raises(TypeError, lambda: np.add(d, h), m)
    raises(TypeError, lambda: np.matmul(d, d.T, out=np.empty((2, 2), np.float32)), m)
    raises(TypeError, lambda: np.matmul(d, h.T, out=cp.empty((2, 2), np.float32)), m)
    raises(TypeError, lambda: np.concatenate([d, h]), m)
    raises(TypeError, lambda: cp.exp(h), m)

    def iadd():
        x = cp.zeros(3)
        x += np.ones(3)
    raises(TypeError, iadd, m)
    assert float((d + np.float32(1) + 2.0).sum()) == 33.0 and float((np.float32(2) * d).sum()) == 30.0


@check("no implicit conversion: np.asarray / np.array / float(size>1) / assert_allclose raise")
def _():
    raises(TypeError, lambda: np.asarray(d), "Implicit conversion to a NumPy array is not allowed")
    raises(TypeError, lambda: np.array(d), "Implicit conversion")
    raises(TypeError, lambda: np.testing.assert_allclose(d, h), "Implicit conversion")
    cp.testing.assert_allclose(d, h)  # cupy.testing takes both


@check("views share memory (slices, reshape, view, T, ravel, 0-d items); base is the owner")
def _():
    x = cp.zeros((4, 6), np.float32)
    x[1:3, ::2] = 7
    x.reshape(24)[0] = 1
    x.T[5, 3] = 2
    x.ravel()[1] = 3
    x.view(np.int32)[0, 2] = np.float32(4).view(np.int32)
    e = x[2, 4]
    e[...] = 5
    want = np.zeros((4, 6), np.float32)
    want[1:3, ::2], want[0, :3], want[3, 5], want[2, 4] = 7, (1, 3, 4), 2, 5
    np.testing.assert_array_equal(x.get(), want)
    assert x[1:].base is x and x[1:][1:].base is x and x.copy().base is None
    assert isinstance(x[0, 0], cp.ndarray) and x[0, 0].ndim == 0 and x[[0, 1]].base is None
    y = cp.arange(5)
    y[cp.asarray([0, 2])] = cp.asarray([9, 8])
    y[np.array([4])] = 7
    assert y.tolist() == [9, 1, 8, 3, 7] and y[y > 5].tolist() == [9, 8, 7] and len(y) == 5
    assert [int(v) for v in y] == [9, 1, 8, 3, 7]


@check("scalars, reductions, methods, creation, empty_like poisoned with NaN")
def _():
    s = d.sum()
    assert isinstance(s, cp.ndarray) and s.ndim == 0 and float(s) == 15.0 and f"{s:.1f}" == "15.0"
    assert int(d.max()) == 5 and int(d.argmax()) == 5 and float(d.mean()) == 2.5 and bool(d.any())
    assert isinstance(np.sum(d), cp.ndarray) and isinstance(np.linalg.norm(d), cp.ndarray)
    e = np.empty_like(d)
    assert isinstance(e, cp.ndarray) and e.dtype == np.float32 and bool(cp.isnan(e).all())
    assert bool(cp.isnan(cp.empty(3)).all()) and bool(cp.isnan(cp.empty_like(d)).all())
    raises(TypeError, lambda: cp.zeros_like(h))
    c = cp.empty((2, 2), np.float32)
    r = np.matmul(d, d.T, out=c)
    assert r is c and np.allclose(c.get(), h @ h.T)
    assert (d @ d.T).shape == (2, 2) and isinstance(d.T @ d, cp.ndarray)
    assert cp.concatenate([d, d]).shape == (4, 3) and isinstance(cp.stack([d, d]), cp.ndarray)
    assert cp.asarray(d) is d and cp.asarray(d, np.float64) is not d and cp.array(d) is not d
    assert d.astype(np.float64).dtype == np.float64 and cp.einsum("ij,ij->", d, d).item() == 55.0
    out = np.zeros((2, 3), np.float32)
    assert d.get(out=out) is out and cp.asnumpy(d).tolist() == h.tolist()
    z = cp.zeros((2, 3), np.float32)
    z.set(h)
    np.add.at(z, (np.array([0, 0]), np.array([1, 1])), 1.0)
    cupyx.scatter_add(z, cp.asarray([1]), 10.0)
    assert z.tolist() == [[0, 3, 2], [13, 14, 15]]
    assert isinstance(cupyx.empty_pinned((2,), np.float32), np.ndarray) and cupyx.zeros_pinned(3).sum() == 0
    assert isinstance(cp.random.default_rng(0).standard_normal(3), cp.ndarray)
    f = d.flags
    assert f.c_contiguous and not d.T.flags.c_contiguous and f.owndata and f["C_CONTIGUOUS"]
    assert cp.asarray([1, 2]).dtype == np.int64 and cp.linspace(0, 1, 3).tolist() == [0, 0.5, 1]


@check("__cuda_array_interface__ (v3) and mpi4py Sendrecv between fake arrays")
def _():
    from mpi4py import MPI
    cai = d.__cuda_array_interface__
    assert cai["version"] == 3 and cai["data"] == (d.data.ptr, False) and cai["strides"] is None
    assert cai["typestr"] == "<f4" and cai["shape"] == (2, 3) and d.T.__cuda_array_interface__["strides"] == (4, 12)
    a, b = cp.arange(10, dtype=np.float64), cp.zeros(10)
    MPI.COMM_SELF.Sendrecv(a, 0, 0, b, 0, 0)
    assert b.tolist() == list(range(10))
    c = cp.zeros(5, np.int32)
    MPI.COMM_SELF.Sendrecv([cp.arange(5, dtype=np.int32), MPI.INT], 0, 0, [c, MPI.INT], 0, 0)
    assert c.tolist() == [0, 1, 2, 3, 4]
    raises(BufferError, lambda: MPI.COMM_SELF.Sendrecv(cp.zeros((4, 4))[:, :2], 0, 0, cp.zeros(8), 0, 0),
           "not contiguous")


@check("devices: thread-local current device, arrays remember theirs, cross-device ops and bad ids raise")
def _():
    os.environ["FAKECUPY_DEVICES"] = "2"
    try:
        assert cp.cuda.runtime.getDeviceCount() == 2 and cp.cuda.Device().id == 0
        with cp.cuda.Device(1):
            x = cp.ones(3)
            seen = []
            t = threading.Thread(target=lambda: seen.append(cp.zeros(1).device.id))
            t.start()
            t.join()
            assert seen == [0] and cp.cuda.Device().id == 1
        assert x.device.id == 1 and cp.cuda.Device().id == 0 and x[1:].device.id == 1
        raises(ValueError, lambda: x + 1, "different from the current device")
        assert x.get().tolist() == [1, 1, 1] and x.copy().device.id == 0
        raises(cp.cuda.runtime.CUDARuntimeError, lambda: cp.cuda.Device(2).use(), "invalid device ordinal")
        os.environ["FAKECUPY_DEVICES"] = "0"
        raises(cp.cuda.runtime.CUDARuntimeError, lambda: cp.cuda.Device(0).use(), "no CUDA-capable device")
        raises(cp.cuda.runtime.CUDARuntimeError, lambda: cp.zeros(1))
        assert not cp.cuda.is_available()
    finally:
        os.environ.pop("FAKECUPY_DEVICES")
    p = cp.cuda.runtime.getDeviceProperties(0)
    assert p["name"] == b"Fake GPU" and cp.cuda.Device(0).compute_capability == "90"
    cp.cuda.get_current_stream().synchronize()
    with cp.cuda.Stream() as st:
        assert cp.cuda.get_current_stream() is st
    assert cp.cuda.get_current_stream() is cp.cuda.Stream.null
    assert cp.get_default_memory_pool().used_bytes() == 0
    raises(RuntimeError, lambda: cp.RawModule(code=""), "route the launchers")


@check("route_kernels: hpr.kernels faces on fake arrays run the CPU kernels via the gpu launchers")
def _():
    import route
    from hpr.errors import ConfigError
    from hpr.kernels import gpu, nn
    from hpr.kernels import reduce as R
    from hpr.kernels import statevec as SV

    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 8)), rng.standard_normal(8), rng.standard_normal(8)
    want = [np.empty((5, 8)), np.empty(5), np.empty(5)]
    nn.layernorm_forward(x, w, b, *want)
    got = [cp.empty((5, 8)), cp.empty(5), cp.empty(5)]
    raises(RuntimeError, lambda: nn.layernorm_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), *got),
           "route the launchers")  # unrouted: the real launcher reaches RawModule
    route.calls.clear()
    route.route_kernels()
    try:
        r = nn.layernorm_forward(cp.asarray(x), cp.asarray(w), cp.asarray(b), *got)
        assert r is got[0] and route.calls["layernorm_forward"] == 1
        for g, wnt in zip(got, want):
            np.testing.assert_array_equal(g.get(), wnt)
        raises(TypeError, lambda: nn.layernorm_forward(cp.asarray(x), w, cp.asarray(b), *got), "host numpy array")
        raises(ValueError, lambda: nn.gelu_forward(cp.asarray(x).T, cp.empty((8, 5))), "non-C-contiguous")
        db = cp.zeros(8)
        assert nn.bias_backward(cp.asarray(x), db) is db and np.allclose(db.get(), x.sum(0))  # gpu returns db
        assert abs(nn.sumsq(cp.asarray(x)) - (x ** 2).sum()) < 1e-9
        a = cp.asarray(x.copy())
        assert R.reduce_into(a, cp.asarray(x), "avg") is a and np.allclose(R.scale(a, 0.5).get(), x)
        raises(ConfigError, lambda: R.reduce_into(cp.zeros(3, np.float16), cp.zeros(3, np.float16)),
               "float32/float64")
        s = np.zeros((2, 8), np.complex128)
        s[:, 0] = 1
        sd = cp.asarray(s)
        hm = np.array([[1, 1], [1, -1]], np.complex128) / np.sqrt(2)
        SV.apply_1q(s, 0, hm)
        gpu.apply_1q(sd, 0, cp.asarray(hm[None]), 1)
        SV.apply_x(s, 2, controls=(0,))
        gpu.apply_x(sd, 2, 1)
        np.testing.assert_allclose(sd.get(), s)
        for st in (s, sd):  # the statevec faces hand a device state to the gpu launchers
            SV.apply_1q(st, 1, hm)
            SV.apply_controlled(st, (1,), 0, hm)
            SV.apply_diag_1q(st, 2, np.exp(1j * np.arange(2)))
            SV.apply_diag_2q(st, 0, 2, np.exp(1j * np.arange(4)))
            SV.apply_2q(st, 2, 0, np.kron(hm, hm))
            SV.apply_swap(st, 0, 1)
        np.testing.assert_allclose(sd.get(), s)
        ez = gpu.expval_z(sd)
        assert isinstance(ez, cp.ndarray) and np.allclose(ez.get(), SV.expval_z(s))
        raises(TypeError, lambda: gpu.apply_1q(sd, 0, cp.asarray(hm[None].astype(np.complex64)), 1), "reads it as")
        assert route.calls["apply_1q"] == 3 and route.calls["apply_diag"] == 2 and route.calls["expval_z"] == 1
    finally:
        route.unroute()
    assert not hasattr(gpu.layernorm_forward, "routed")


@check("route.installed() routes the quantum program path (Circuit.run / gpu.run_program, adjoint_program)")
def _():
    import route
    from hpr.kernels import gpu
    sys.path.insert(0, os.path.join(HERE, ".."))
    from test_quantum_program import random_circuit

    c = random_circuit(4, 30, seed=5)
    prog = c.compile(3)
    r = np.random.default_rng(4)
    x, w, g = r.uniform(-2, 2, (6, 2)), r.uniform(-2, 2, 3), r.standard_normal((6, 4))
    cpu = c.run(x, w, np.complex128, fuse=3)
    with route.installed():
        s = cp.zeros((6, 16), np.complex128)
        s[:, 0] = 1
        prog.run(s, x, w)
        np.testing.assert_allclose(s.get(), cpu, atol=1e-12)
        c.forward(x, w, np.complex128, fuse=3)
        dx, dw = c.backward(g)
        gdx, gdw = gpu.adjoint_program(s, cp.asarray(g), cp.asarray(prog.ops), cp.asarray(prog._mats(np.complex128, True)),
                                       cp.asarray(prog.fixed), cp.asarray(x), cp.asarray(w))
        np.testing.assert_allclose(gdx.get(), dx, atol=1e-10)
        np.testing.assert_allclose(gdw.get().sum(0), dw, atol=1e-10)
        assert route.calls["run_program"] == 1 and route.calls["adjoint_program"] == 1
    assert "cupy" not in sys.modules and HERE not in sys.path


print("fake cupy self-check passed")
