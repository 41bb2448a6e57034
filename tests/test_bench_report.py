"""``python -m hpr.bench all``: the report built from small synthetic JSON (its tables hold the figures
given and the ratios computed from them, a failed benchmark is listed with its log, charts are drawn when
matplotlib is importable and skipped with instructions when not, files are replaced whole or not at
all), the command line's errors, and one real ``--quick`` run end to end (a few seconds on 2 cores,
without matplotlib in CI)."""
import json
import os
import subprocess
import sys

import pytest

from hpr.bench import report
from hpr.bench import BENCHES
from hpr.bench.report import Run

HAVE_MPL = report.pyplot() is not None  # CI does not install matplotlib: the report must work without it

ALLREDUCE = {"ranks": 2, "mpi": "MPICH Version:      5.0.2", "rows": [
    {"bytes": 8, "algorithm": "shm", "hpr_us": 3.1, "mpi_us": 2.5, "hpr_busbw_gbps": 0.00258,
     "mpi_busbw_gbps": 0.0032, "hpr_numpy_us": 3.3, "hpr_numpy_busbw_gbps": 0.0024},
    {"bytes": 1 << 20, "algorithm": "shm", "hpr_us": 123.4, "mpi_us": 246.8, "hpr_busbw_gbps": 8.5,
     "mpi_busbw_gbps": 4.25, "hpr_numpy_us": 200.0, "hpr_numpy_busbw_gbps": 5.1}]}
TRAIN_S = {"preset": "S", "batch": 16, "threads": 1, "matmul_gflops": 151.8, "torch_matmul_gflops": 164.3,
           "ratio_hpr_over_torch": 1.137, "rows": [
               {"name": "hpr", "step_ms": 130.1, "tokens_per_s": 15743.3, "mfu": 0.591, "steps": 6},
               {"name": "torch 2.13.0+cpu", "step_ms": 147.9, "tokens_per_s": 13848.6, "mfu": 0.52, "steps": 6}]}
TRAIN_M = {"preset": "M", "batch": 8, "threads": 1, "matmul_gflops": 150.0, "rows": [
    {"name": "hpr", "step_ms": 1510.2, "tokens_per_s": 1356.2, "mfu": 0.577, "steps": 3}]}
LAYOUTS = {"preset": "S", "ranks": 2, "threads": 1, "batch": 16, "micro_batches": 8, "steps": 3, "context": 128,
           "reference": {"layout": [2, 1, 1], "tokens_per_s": 20000.0}, "skipped": [], "rows": [
               {"dp": 2, "tp": 1, "pp": 1, "step_ms": 102.4, "tokens_per_s": 20000.0, "ratio_vs_dp": 1.0,
                "mem_bytes": {"params": 1, "grads": 1, "opt": 2, "act": 3, "total": 3 * 2 ** 20},
                "bubble": None, "bubble_theory": None, "dp_bytes": 2 ** 21, "tp_bytes": 0, "pp_bytes": 0},
               {"dp": 1, "tp": 1, "pp": 2, "step_ms": 128.0, "tokens_per_s": 16000.0, "ratio_vs_dp": 0.8,
                "mem_bytes": {"total": 2 ** 21}, "bubble": 0.2345, "bubble_theory": 0.111,
                "dp_bytes": 0, "tp_bytes": 0, "pp_bytes": 2 ** 20}]}
DP = {"preset": "S", "ranks": 2, "batch_per_rank": 16, "threads": 1, "torch": "2.13.0+cpu",
      "reference": {"hpr_tokens_per_s": 15000.0, "torch_tokens_per_s": 12000.0}, "rows": [
          {"k": 1, "hpr_step_ms": 136.5, "hpr_tokens_per_s": 15000.0, "hpr_ideal_tokens_per_s": 15000.0,
           "hpr_efficiency": 1.0, "hpr_exposed_comm": 0.0, "torch_tokens_per_s": 12000.0, "torch_efficiency": 1.0,
           "ratio_hpr_over_torch": 1.25},
          {"k": 2, "hpr_step_ms": 150.1, "hpr_tokens_per_s": 27300.0, "hpr_ideal_tokens_per_s": 30000.0,
           "hpr_efficiency": 0.91, "hpr_exposed_comm": 0.043, "torch_tokens_per_s": 21000.0,
           "torch_efficiency": 0.875, "ratio_hpr_over_torch": 1.3}]}
# the quantum benchmark's newer shape: lightning beside hpr, a 20-gate circuit, circuits/s of a batch
QUANTUM = {"threads": 1, "rows": [
    {"n": 16, "gate": "H q8", "us": 40.0, "gbps": 52.43, "copy_gbps": 48.1, "ratio_to_copy": 1.09,
     "lightning_us": 80.0},
    {"n": 20, "gate": "H q10", "us": 736.7, "gbps": 45.55, "copy_gbps": 22.5, "ratio_to_copy": 2.02,
     "lightning_us": 812.3}],
    "circuit20": {"n": 24, "hpr_gate_by_gate_us": 90000.0, "hpr_us": 50000.0, "hpr_fused_us": 25000.0,
                  "hpr_ops": 20, "lightning_us": 75000.0},
    "batched": {"circuits": 1024, "qubits": 8, "layers": 4, "hpr_forward_cps": 123456.0,
                "hpr_forward_grad_cps": 40000.0, "numpy_forward_cps": 41152.0, "numpy_forward_grad_cps": 10000.0,
                "lightning_forward_grad_cps": 2500.0}}
OVERSUB = {"setup": "one rank computes, 2 wait; 3 ranks on 2 cores; median of 7",
           "rows": [{"case": "alone (others asleep)", "compute_ms": 40.2, "vs_alone": 1.0},
                    {"case": "others in MPI_Barrier", "compute_ms": 120.6, "vs_alone": 3.0}]}


# python -m hpr.bench quantum (hpr.bench.quantum_suite): the targets
TARGETS = {"gates": {"rows": [{"n": 12, "gate": "rz", "qubits": [11], "hpr_us": 40.0, "lightning_us": 36.0, "ratio": 0.9},
                              {"n": 12, "gate": "x", "qubits": [0], "hpr_us": 10.0, "lightning_us": 20.0, "ratio": 2.0}],
                     "slower_than_lightning": 1, "timed": 2},
           "batched": {"circuits": 16, "hpr_fwd_s": 0.001, "hpr_fwd_grad_s": 0.002, "numpy_fwd_s": 0.02,
                       "alternatives_fwd_grad_s": {"jax jit+vmap": 0.02}},
           "qasm": {"gates": 2000, "hpr_parse_s": 0.1, "hpr_run_s": 0.1, "qiskit_parse_s": 1.0, "qiskit_statevector_s": 0.2}}


def runs(failed_log="Traceback (most recent call last):\nValueError: the last words of the benchmark"):
    return [Run("allreduce", "allreduce", "mpiexec -n 2 python -m hpr.bench allreduce", 1.0, ALLREDUCE),
            Run("train-S", "train", "python -m hpr.bench train --preset S", 5.0, TRAIN_S),
            Run("train-M", "train", "python -m hpr.bench train --preset M", 9.0, TRAIN_M),
            Run("layouts", "layouts", "mpiexec -n 2 python -m hpr.bench layouts", 4.0, LAYOUTS),
            Run("dp", "dp", "mpiexec -n 2 python -m hpr.bench dp", 6.0, DP),
            Run("quantum", "quantum-kernels", "python -m hpr.bench quantum-kernels", 7.0, QUANTUM),
            Run("quantum-targets", "quantum", "python -m hpr.bench quantum --quick", 3.0, TARGETS),
            Run("oversubscribe", "oversubscribe", "mpiexec -n 3 python -m hpr.bench oversubscribe", 2.0, OVERSUB,
                "oversubscribe log"),
            Run("dp-M", "dp", "mpiexec -n 2 python -m hpr.bench dp --preset M", 3.5, None, failed_log,
                error="exit status 1")]


def read(path):
    with open(path) as f:
        return f.read()


def test_tables_hold_the_figures_and_ratios(tmp_path):
    report.write_report(str(tmp_path), runs(), "python -m hpr.bench all --out x", [("cores", "2")],
                        "MPI library: MPICH 5.0.2", charts=False)
    md = read(tmp_path / "README.md")
    assert "python -m hpr.bench all --out x" in md and "MPI library: MPICH 5.0.2" in md
    # allreduce: latency, bus bandwidth and the ratio to MPI's in the same row
    assert "| 1 MiB | shm | 246.8 | 4.250 | 123.4 | 8.500 | 2.00 | 200.0 | 5.100 | 1.20 |" in md
    assert "| 8 B | shm | 2.5 | 0.003 | 3.1 | 0.003 | 0.81 |" in md
    # train: hpr and torch side by side, MFU, the ratio; M without torch has a dash
    assert "| S | 16 | 1 | hpr | 130.1 | 15,743 | 59% | 1.14 |" in md
    assert "| S | 16 | 1 | torch 2.13.0+cpu | 147.9 | 13,849 | 52% |  |" in md
    assert "| M | 8 | 1 | hpr | 1510.2 | 1,356 | 58% | – |" in md
    assert "151.8 GFLOP/s" in md and "torch's own: 164.3" in md
    # layouts: MFU against the train run's peak (151.8 GFLOP/s, the best of the train runs) x 2 cores
    from hpr.model import GPTConfig

    mfu = 20000.0 * GPTConfig.preset("S").flops_per_token() / (151.8e9 * 2)
    assert f"| 2 × 1 × 1 | 102.4 | 20,000 | 1.00 | {mfu:.0%} | 3.00 | – | – | 2.00 | 0.00 | 0.00 |" in md
    assert "| 1 × 1 × 2 | 128.0 | 16,000 | 0.80 |" in md and "23.4% | 11.1% |" in md
    # dp: weak scaling beside DDP
    assert "| 2 | 150.1 | 27,300 | 30,000 | 91% | 4.3% | 21,000 | 88% | 1.30 |" in md
    # quantum: gates against the copy, lightning beside, the circuit and the batch
    assert "| 20 | H q10 | 736.7 | 45.55 | 22.50 | 2.02 | 812.3 | 1.10 |" in md
    assert "| hpr fused | 25,000.0 | 0.50 |" in md and "| lightning | 75,000.0 | 1.50 |" in md
    assert "| hpr gate by gate | 90,000.0 | 1.80 |" in md and "| hpr ops |" not in md
    assert "| hpr | forward | 123,456 | 3.00 |" in md
    assert "| hpr | forward + gradient | 40,000 | 4.00 |" in md
    assert "| lightning | forward + gradient | 2,500 | 0.25 |" in md
    assert "| others in MPI_Barrier | 120.6 | 3.00 |" in md
    # quantum targets: the count that holds, each miss with its ratio, the batched and QASM ratios
    assert "1 of 2 hold, n = 12." in md and "| 12 | rz | [11] | 40.0 | 36.0 | 0.90 |" in md
    assert "| 12 | x | [0] |" not in md
    assert "forward 20.0× vectorised numpy" in md and "Forward + gradient: 10.0× jax jit+vmap" in md
    assert "2000 gates parsed and run: 6.0× Qiskit's" in md
    # the failed one: in the run list and in its section, with the end of its log
    assert "| [dp-M](dp-M.log) | FAILED: exit status 1 | 3.5 |" in md
    assert "**dp-M FAILED**: exit status 1" in md and "ValueError: the last words of the benchmark" in md
    assert "| [quantum](quantum.log) | ok | 7.0 |" in md
    assert not [p for p in os.listdir(tmp_path) if ".tmp." in p]


def test_older_quantum_shape_and_missing_keys(tmp_path):
    old = {"threads": 1, "rows": [{"n": 16, "gate": "CNOT 0,15", "us": 78.0, "gbps": 26.9, "copy_us": 40.0,
                                   "copy_gbps": 51.89, "ratio_to_copy": 0.52, "qulacs_us": 39.0}],
           "others": ["qulacs"], "batched": {"states": 4096, "qubits": 6, "hpr_us_per_state": 2.0,
                                              "numpy_us_per_state": 5.0}}
    sparse = {"rows": [{"n": 18, "gate": "H q0", "us": 100.0}]}  # most keys missing: dashes, no error
    report.write_report(str(tmp_path), [Run("quantum", "quantum-kernels", "q", 1.0, old),
                                        Run("quantum-2", "quantum-kernels", "q", 1.0, sparse)], "cmd", charts=False)
    md = read(tmp_path / "README.md")
    assert "| 16 | CNOT 0,15 | 78.0 | 26.90 | 51.89 | 0.52 | 39.0 | 0.50 |" in md
    assert "| hpr | forward + expectations | 500,000 | 2.50 |" in md
    assert "| numpy | forward + expectations | 200,000 | 1.00 |" in md
    assert "| 18 | H q0 | 100.0 | – | – | – |" in md
    assert "FAILED" not in md
    from hpr.bench.figures import batched_rows, generic_gate

    assert batched_rows({"qiskit_aer_forward_grad_cps": 5.0, "circuits": 8}) == [
        ("qiskit_aer", "forward + gradient", 5.0)]
    assert [generic_gate(g, 16) for g in ("H q0", "H q8", "CNOT 0,15")] == ["H q0", "H q(n/2)", "CNOT 0,(n-1)"]


def test_json_of_another_shape_is_reported_not_raised(tmp_path):
    bad = Run("allreduce", "allreduce", "a", 1.0, {"rows": [{"bytes": None}]})
    good = Run("dp", "dp", "d", 1.0, DP)
    report.write_report(str(tmp_path), [bad, good], "cmd", charts=False)
    md = read(tmp_path / "README.md")
    assert bad.failed and "could not read its JSON" in bad.error
    assert "**allreduce FAILED**" in md and "| 2 | 150.1 | 27,300 |" in md


@pytest.mark.skipif(not HAVE_MPL, reason="matplotlib is not installed (pip install 'hpr[plot]')")
def test_charts_drawn_with_matplotlib(tmp_path):
    written = report.write_report(str(tmp_path), runs(), "cmd")
    assert written == ["allreduce.png", "training.png", "dp.png", "quantum.png", "quantum_batched.png"]
    md = read(tmp_path / "README.md")
    for name in written:
        with open(tmp_path / name, "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(tmp_path / name) > 10_000
        assert f"]({name})" in md
    assert "matplotlib is not installed" not in md


def test_without_matplotlib_tables_and_how_to_get_charts(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "pyplot", lambda: None)
    assert report.write_report(str(tmp_path), runs(), "cmd") == []
    md = read(tmp_path / "README.md")
    assert "Charts skipped: matplotlib is not installed" in md and "pip install 'hpr[plot]'" in md
    assert "| 20 | H q10 | 736.7 |" in md
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".png")]


def test_write_atomic_leaves_no_partial_file(tmp_path):
    path = tmp_path / "README.md"
    report.write_atomic(str(path), "old report\n")
    with pytest.raises(UnicodeEncodeError):
        report.write_atomic(str(path), "new report, then a lone surrogate \ud800 half-way")
    assert read(path) == "old report\n"
    assert os.listdir(tmp_path) == ["README.md"]
    with pytest.raises(UnicodeEncodeError):
        report.write_atomic(str(tmp_path / "fresh.md"), "\ud800")
    assert os.listdir(tmp_path) == ["README.md"]


def test_plan_runs_every_benchmark():
    want = set(BENCHES) - {"all"}
    for quick in (True, False):
        todo = report.plan(quick, ranks=2, cores=2)
        assert {b for _, b, _, _ in todo} == want
        assert all(n <= 4 for _, _, n, _ in todo)
        assert all(report.declared(b, flags)[1] == [] or b == "quantum-kernels" for _, b, _, flags in todo)


def test_failed_benchmark_run(tmp_path):
    stale = tmp_path / "train-bad.json"
    stale.write_text(json.dumps(TRAIN_S))  # from an earlier run: must not pass for this one's figures
    r = report.run_bench("train-bad", "train", 0, {"--preset": "nope", "--no-such-flag-here": "1"},
                         str(tmp_path), "out", 300, None)
    assert r.failed and r.error.startswith("exit status") and r.data is None
    assert r.dropped == ["--no-such-flag-here"]
    assert "--preset nope --json out/train-bad.json" in r.cmd
    assert not stale.exists() and "nope" in read(tmp_path / "train-bad.log")
    r = report.run_bench("dp", "dp", 2, {}, str(tmp_path), "out", 300, None)
    assert r.failed and "no mpiexec" in r.error


def test_a_failure_does_not_stop_the_others_and_sets_the_exit_status(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "plan", lambda quick, ranks, cores: [
        ("train-bad", "train", 0, {"--preset": "nope"}),
        ("train-ok", "train", 0, {"--preset": "tiny", "--steps": "1", "--rounds": "1", "--no-torch": None})])
    assert report.main(["--out", str(tmp_path / "r"), "--no-charts"]) == 1
    assert "failed: train-bad" in capsys.readouterr().out
    md = read(tmp_path / "r" / "README.md")
    assert "| [train-bad](train-bad.log) | FAILED: exit status 1 |" in md and "unknown preset 'nope'" in md
    with open(tmp_path / "r" / "train-ok.json") as f:
        ok = json.load(f)
    assert "| [train-ok](train-ok.log) | ok |" in md
    assert f"| tiny | 16 | 1 | hpr | {ok['rows'][0]['step_ms']:.1f} | {ok['rows'][0]['tokens_per_s']:,.0f} |" in md


def test_oversubscribe_log_parsed():
    log = ("# one rank computes, 2 wait; 3 ranks on 2 cores; median of 7\ncase   compute ms  vs alone\n"
           "alone (others asleep)               40.1      1.00\nothers in hpr barrier               41.0      1.02\n"
           "others in MPI_Barrier               80.3      2.00\n")
    d = report.parse_oversubscribe(log)
    assert d["setup"].startswith("one rank computes")
    assert d["rows"][2] == {"case": "others in MPI_Barrier", "compute_ms": 80.3, "vs_alone": 2.0}
    with pytest.raises(ValueError):
        report.parse_oversubscribe("nothing here")


@pytest.mark.parametrize("argv, says", [
    (["--out", "/nonexistent-hpr-parent/report"], "does not exist"),
    (["--out", "{tmp}/f.txt"], "is a file"),
    (["--out", "{tmp}/r", "--ranks", "0"], "--ranks must be at least 1"),
    (["--out", "{tmp}/r", "--only", "allreduce,bogus"], "bogus not in the plan"),
])
def test_bad_input_is_a_message_not_a_traceback(tmp_path, capsys, argv, says):
    (tmp_path / "f.txt").write_text("x")
    assert report.main([a.format(tmp=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_bad_flags_and_mpiexec(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as e:
        report.main(["--out", str(tmp_path), "--ranks", "two"])
    assert e.value.code == 2 and "invalid int value" in capsys.readouterr().err
    monkeypatch.setenv("PMI_SIZE", "2")
    assert report.main(["--out", str(tmp_path)]) == 2
    assert "not under mpiexec" in capsys.readouterr().err


def test_all_quick_end_to_end(tmp_path):
    """The real command, as a user runs it: every benchmark at tiny sizes, about 5 s on 2 cores (the time
    limit is for a first import that builds the kernels)."""
    out = tmp_path / "report"
    env = dict(os.environ, HPR_TIMEOUT="60", PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, "-m", "hpr.bench", "all", "--quick", "--out", str(out)], env=env,
                       capture_output=True, text=True, timeout=300, cwd=os.path.dirname(__file__))
    assert p.returncode == 0, p.stdout + p.stderr
    names = [n for n, *_ in report.plan(True, 2, 2)]
    files = set(os.listdir(out))
    assert {"README.md"} | {f"{n}.log" for n in names} <= files
    assert {f"{n}.json" for n in names if n != "oversubscribe"} <= files
    assert not [f for f in files if ".tmp." in f]
    md = read(out / "README.md")
    for n in names:
        assert f"| [{n}]({n}.log) | ok |" in md
    # figures of the benchmarks' own JSON appear in the report's tables
    with open(out / "allreduce.json") as f:
        ar = json.load(f)
    w = ar["rows"][-1]
    assert f"| {w['mpi_us']:.1f} | {w['mpi_busbw_gbps']:.3f} | {w['hpr_us']:.1f} |" in md
    with open(out / "train-tiny.json") as f:
        tr = json.load(f)
    assert f"| {tr['rows'][0]['tokens_per_s']:,.0f} | {tr['rows'][0]['mfu']:.0%} |" in md
    with open(out / "quantum.json") as f:
        q = json.load(f)
    assert f"| {q['rows'][0]['gate']} | {q['rows'][0]['us']:.1f} |" in md
    with open(out / "generate.json") as f:
        g = json.load(f)["rows"][0]
    assert f"| S | 128 | 24 | {g['hpr_tok_s']:,.1f} | {g['recompute_tok_s']:,.1f} |" in md
    if HAVE_MPL:
        assert {"allreduce.png", "training.png", "dp.png", "quantum.png"} <= files
    else:
        assert "pip install 'hpr[plot]'" in md and not [f for f in files if f.endswith(".png")]
