"""Which of OpenBLAS's kernel sets numpy's matmuls run (hpr.cpu.choose_blas_kernels, HPR_BLAS_KERNELS):
hpr's table by CPU, a named set, keep, the user's OPENBLAS_CORETYPE, and the refusals. Each case runs in
a child process (the choice is made once per process and changes numpy's BLAS for the whole process),
and every case checks a float32 product on the chosen kernels against float64."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hpr import config, cpu
from hpr.errors import ConfigError

CHILD = textwrap.dedent("""
    import json, os
    import numpy as np
    from hpr import cpu
    before = cpu._openblas()[1]
    try:
        cpu.set_num_threads(1)
    except Exception as e:
        print(json.dumps({"error": type(e).__name__, "message": str(e), "before": before}))
        raise SystemExit(0)
    name, how = cpu.blas_kernels()
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 257)).astype(np.float32)
    b = rng.standard_normal((257, 131)).astype(np.float32)
    err = float(np.abs(a @ b - a.astype(np.float64) @ b.astype(np.float64)).max())
    print(json.dumps({"name": name, "how": how, "before": before, "asked": cpu._openblas()[1], "err": err,
                      "env": os.environ.get("OPENBLAS_CORETYPE")}))
""")


def child(tmp_path, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("HPR_BLAS_KERNELS", "OPENBLAS_CORETYPE")}
    e.update(env)
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=tmp_path, env=e, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def switchable():
    return cpu._openblas()[0] is not None


needs_dynamic = pytest.mark.skipif(not switchable(), reason="numpy's BLAS is not a DYNAMIC_ARCH OpenBLAS "
                                   f"({cpu.blas_info()}): it cannot change kernels at run time")


def test_cpu_identity_reads_the_first_processor(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "flags\t\t: fpu sse2 avx2 fma avx512f avx512bw\n\n"
                    "processor\t: 1\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: fpu sse2\n")
    assert cpu.cpu_identity(str(info)) == ("AuthenticAMD", 25, True)
    info.write_text("vendor_id\t: GenuineIntel\ncpu family\t: 6\nflags\t\t: fpu sse2 avx2 fma avx512fx\n")
    assert cpu.cpu_identity(str(info)) == ("GenuineIntel", 6, False)  # avx512fx is not avx512f
    assert cpu.cpu_identity(str(tmp_path / "absent")) == (None, None, False)


@needs_dynamic
def test_auto_follows_the_table(tmp_path):
    r = child(tmp_path)
    want = cpu.BLAS_PREFERRED.get(cpu.cpu_identity())
    assert r["name"] == (want or r["before"]), r
    assert r["asked"] == r["name"]  # OpenBLAS itself reports the set in use
    assert r["env"] is None  # hpr's OPENBLAS_CORETYPE is not left for child processes
    assert r["err"] < 1e-3
    if want is not None and want != r["before"]:
        assert "OpenBLAS picked " + r["before"] in r["how"]


@needs_dynamic
def test_named_set_keep_and_the_users_coretype(tmp_path):
    own = child(tmp_path, HPR_BLAS_KERNELS="keep")
    assert own["name"] == own["before"] and "keep" in own["how"]
    # Nehalem (SSE4.2) runs on every x86-64 CPU of the last 15 years and is in numpy's OpenBLAS builds
    other = "Sandybridge" if own["before"].lower() == "nehalem" else "Nehalem"
    named = child(tmp_path, HPR_BLAS_KERNELS=other)
    assert named["name"] == named["asked"] == other, named
    assert named["err"] < 1e-3
    user = child(tmp_path, OPENBLAS_CORETYPE=other)  # OpenBLAS read it at load; auto keeps it
    assert user["before"] == user["name"] == other and "OPENBLAS_CORETYPE" in user["how"], user
    assert user["env"] == other  # the user's own variable stays


@needs_dynamic
def test_a_set_openblas_lacks_is_refused_and_aliases_are_not(tmp_path):
    r = child(tmp_path, HPR_BLAS_KERNELS="NoSuchCore")
    assert r["error"] == "ConfigError" and "no kernel set 'NoSuchCore'" in r["message"], r
    if r["before"].lower() not in ("haswell", "zen"):  # numpy's OpenBLAS runs its Haswell set for Zen
        zen = child(tmp_path, HPR_BLAS_KERNELS="Zen")
        assert zen["name"] == zen["asked"] and zen["name"] in ("Haswell", "Zen"), zen
        assert "HPR_BLAS_KERNELS=Zen" in zen["how"], zen


def test_bad_names_refused_when_read():
    for bad in ("a b", "x;y", "z" * 40):
        with pytest.raises(ConfigError, match="HPR_BLAS_KERNELS"):
            config.from_env({"HPR_BLAS_KERNELS": bad})
    assert config.from_env({"HPR_BLAS_KERNELS": "Auto"}).blas_kernels is None
    assert config.from_env({"HPR_BLAS_KERNELS": "KEEP"}).blas_kernels == "keep"
    assert config.from_env({"HPR_BLAS_KERNELS": "Haswell"}).blas_kernels == "Haswell"


def test_this_process_runs_the_chosen_set():
    """The test process itself (hpr.init ran in conftest or the first test that needed threads): the set
    hpr chose is the one OpenBLAS runs now, and a product on it is right."""
    cpu.set_num_threads(cpu.num_threads())
    name, _ = cpu.blas_kernels()
    assert name == cpu._openblas()[1]
    a = np.random.default_rng(1).standard_normal((64, 64))
    np.testing.assert_allclose(a @ a.T, np.einsum("ik,jk->ij", a, a), rtol=1e-12, atol=1e-12)


def test_numpy_openblas_before_scipys(monkeypatch):
    """scipy (which qiskit loads) brings an OpenBLAS of its own; hpr must find and switch numpy's, the one
    numpy's matmuls call, whatever order threadpoolctl lists them in."""
    real = [lib for lib in cpu.threadpool_info() if lib.get("internal_api") == "openblas"]
    if not real:
        pytest.skip(f"numpy's BLAS is not OpenBLAS ({cpu.blas_info()})")
    site = os.path.dirname(os.path.dirname(os.path.abspath(np.__file__)))
    scipys = dict(real[0], filepath=os.path.join(site, "scipy.libs", "libscipy_openblas-0000.so"))
    monkeypatch.setattr(cpu, "threadpool_info", lambda: [scipys] + real)
    dll, lib = cpu.openblas_library()
    assert dll is not None and lib["filepath"] == real[0]["filepath"]
