"""``python -m hpr.bench all --out DIR [--quick] [--ranks N]``: every benchmark, one after another, at sizes
that fit this machine, then a Markdown report of them (DIR/README.md) with PNG charts beside it.

Owns: the plan (which benchmark runs with which flags, under ``mpiexec -n N`` for the parallel ones),
running each as a subprocess (its stdout and stderr kept in DIR/<name>.log, its figures in
DIR/<name>.json), and turning those JSON files into tables and charts. It measures nothing itself: every
figure and every reference beside it comes from the benchmark that printed it. Run it as one plain
process, not under mpiexec: it starts mpiexec itself (the one beside this Python, else the one on PATH).

A benchmark that fails (exit status, time limit, no JSON) is listed in the report with the tail of its
log; the others still run, and the exit status is 1. Charts need matplotlib (``pip install 'hpr[plot]'``);
without it the report has the tables and says so. Every file is written under a temporary name and
renamed, so DIR never holds half a report.

    python -m hpr.bench all --out docs/bench          # a few minutes on 2 cores (data: ~2 of them)
"""
import argparse
import datetime
import importlib.util
import io
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from hpr.bench import BENCHES, torch_reference
from hpr.bench.figures import (allreduce_chart, allreduce_md, attention_md, batched_chart, data_md, dp_chart, dp_md,
                               fmt, generate_md, layouts_md, oversubscribe_md, quantum_chart, quantum_md,
                               quantum_targets_md, table, train_md, training_chart)
from hpr.errors import ConfigError, HprError

PLOT_HINT = "pip install 'hpr[plot]'"


def plan(quick, ranks, cores):
    """[(name, benchmark, ranks (0: a plain process), {flag: value or None})]: what `all` runs. The full
    sizes take a few minutes on 2 cores; --quick is a smoke run (seconds). oversubscribe wants more ranks
    than cores, so it gets cores + 1 when that is at most twice --ranks."""
    over = max(ranks, min(cores + 1, 2 * ranks))
    if quick:
        return [("allreduce", "allreduce", ranks, {"--max-bytes": "64K", "--factor": "16", "--budget": "0.02"}),
                ("train-tiny", "train", 0, {"--preset": "tiny", "--steps": "2", "--rounds": "1", "--no-torch": None}),
                ("layouts", "layouts", ranks, {"--preset": "tiny", "--steps": "2"}),
                ("dp", "dp", ranks, {"--preset": "tiny", "--steps": "2", "--warmup": "1", "--no-torch": None}),
                ("quantum", "quantum-kernels", 0, {"--max-qubits": "16", "--budget": "0.02", "--circuit-qubits": "16",
                                                    "--batch": "64"}),
                ("quantum-targets", "quantum", 0, {"--quick": None}),
                ("oversubscribe", "oversubscribe", over, {"--ms": "5", "--repeats": "3"}),
                ("data", "data", 0, {"--quick": None, "--vocab-size": "512"}),
                ("scale", "scale", 0, {"--quick": None}),
                ("generate", "generate", 0, {"--quick": None, "--no-transformers": None}),
                ("attention", "attention", 0, {"--T": "128", "--D": "32", "--repeats": "2", "--no-torch": None})]
    return [("allreduce", "allreduce", ranks, {"--max-bytes": "128M", "--budget": "0.2"}),
            ("train-S", "train", 0, {"--preset": "S"}),
            ("train-M", "train", 0, {"--preset": "M"}),
            ("layouts", "layouts", ranks, {"--preset": "S"}),
            ("dp", "dp", ranks, {"--preset": "S"}),
            ("quantum", "quantum-kernels", 0, {"--max-qubits": "24", "--circuit-qubits": "24", "--batch": "1024"}),
            ("quantum-targets", "quantum", 0, {"--sizes": "22", "--stat": "min"}),
            ("oversubscribe", "oversubscribe", over, {}),
            ("data", "data", 0, {}),
            ("scale", "scale", 0, {"--presets": "S", "--layouts": "1x1x1,2x1x1,1x2x1"}),
            ("generate", "generate", 0, {}),
            ("attention", "attention", 0, {})]


# ------------------------------------------------------------------------------------ files
def write_atomic(path, data):
    """str or bytes at path, written under a temporary name and renamed; on any error the temporary
    file is removed and whatever was at path before is left as it was."""
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_chart(fig, path):
    """A matplotlib figure as PNG at path, atomically (see write_atomic)."""
    import matplotlib.pyplot as plt  # lazy: matplotlib is optional (the plot extra)

    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib  # lazy: optional (the plot extra); without it the report has tables only
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after choosing the Agg backend

    return plt


# ------------------------------------------------------------------------------------ running
@dataclass
class Run:
    """One benchmark run: what was started, how it ended, and its figures."""
    name: str                      # file stem in DIR: allreduce, train-S, ...
    bench: str                     # the hpr.bench module it ran
    cmd: str = ""                  # as shown in the report
    seconds: float = 0.0
    data: dict = None              # its JSON (or what was parsed from its log)
    log: str = ""
    error: str = None              # why it counts as failed; None when it did not
    dropped: list = field(default_factory=list)  # flags of the plan its module does not declare

    @property
    def failed(self):
        return self.error is not None


def find_mpiexec():
    """The mpiexec beside this Python (pip's mpich puts it there), else the one on PATH, else None."""
    local = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return local if os.path.exists(local) else shutil.which("mpiexec")


def declared(bench, flags):
    """(kept, dropped): the flags that benchmark's source declares, and those it does not (the
    benchmarks change; a flag one no longer has is left out and named in the report, not an error)."""
    with open(importlib.util.find_spec(BENCHES[bench][0]).origin) as f:
        src = f.read()
    kept = {k: v for k, v in flags.items() if f'"{k}"' in src}
    return kept, [k for k in flags if k not in kept]


def parse_oversubscribe(log):
    """oversubscribe prints its table and has no --json: its rows, read from the log."""
    rows = [{"case": m[1].strip(), "compute_ms": float(m[2]), "vs_alone": float(m[3])}
            for m in re.finditer(r"^((?:alone|others in)[^\n]*?)\s+([\d.]+)\s+([\d.]+)\s*$", log, re.M)]
    head = re.search(r"^# (one rank computes.*)$", log, re.M)
    if not rows:
        raise ValueError("no result rows in its output")
    return {"rows": rows, "setup": head[1] if head else ""}


def run_bench(name, bench, ranks, flags, out, shown_out, limit, mpiexec):
    """Start one benchmark, wait for it (killing its whole process group after `limit` seconds), keep
    its output in out/<name>.log and read out/<name>.json. Never raises for the benchmark's failures."""
    jpath = os.path.join(out, f"{name}.json")
    kept, dropped = declared(bench, dict(flags, **{"--json": jpath}))
    args = [x for k, v in kept.items() for x in ((k,) if v is None else (k, v))]
    cmd = [sys.executable, "-m", "hpr.bench", bench, *args]
    if ranks:
        cmd = [mpiexec or "mpiexec", "-n", str(ranks)] + cmd
    shown = ["mpiexec" if c == cmd[0] and ranks else "python" if c == sys.executable else
             c.replace(jpath, os.path.join(shown_out, f"{name}.json")) for c in cmd]
    run = Run(name, bench, shlex.join(shown), dropped=[d for d in dropped if d != "--json"])
    if os.path.exists(jpath):
        os.remove(jpath)  # a stale file from an earlier run must not pass for this one's
    if ranks and mpiexec is None:
        run.error = "no mpiexec found beside this Python or on PATH: pip install mpich, or load your site's MPI"
        return run
    log = os.path.join(out, f"{name}.log")
    tmp = f"{log}.tmp.{os.getpid()}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    with open(tmp, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            rc = None
        finally:  # past its time limit, or Ctrl-C here: the benchmark's whole process group goes too
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            os.replace(tmp, log)
    run.seconds = time.perf_counter() - t0
    with open(log, errors="replace") as f:
        run.log = f.read()
    if rc is None:
        run.error = f"killed after its time limit of {limit} s"
    elif rc != 0:
        run.error = f"exit status {rc}"
    elif "--json" in kept:
        try:
            with open(jpath) as f:
                run.data = json.load(f)
        except (OSError, ValueError) as e:
            run.error = f"exited 0 but {name}.json is missing or unreadable ({e})"
    elif bench == "oversubscribe":
        try:
            run.data = parse_oversubscribe(run.log)
        except ValueError as e:
            run.error = f"exited 0 but its output could not be read: {e}"
    else:
        run.error = "exited 0 but has no --json option to read its figures from"
    return run


def machine(ranks, load_at_start=None):
    """[(what, value)] about this machine, and the output of ``python -m hpr config``."""

    def first(path, key):
        try:
            with open(path) as f:
                return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith(key)), None)
        except OSError:
            return None

    mem = first("/proc/meminfo", "MemTotal")
    try:
        import matplotlib  # lazy: optional (the plot extra)

        mpl = matplotlib.__version__
    except ImportError:
        mpl = f"not installed ({PLOT_HINT} for the charts)"
    rows = [("cores", str(os.cpu_count())), ("CPU", first("/proc/cpuinfo", "model name") or platform.processor()),
            ("memory", f"{int(mem.split()[0]) / 2 ** 20:.1f} GiB" if mem else "?"),
            ("system", platform.platform()), ("Python", platform.python_version()), ("numpy", np.__version__),
            ("PyTorch", torch_reference.available() or "not installed"),
            ("matplotlib", mpl),
            ("MPI ranks", f"{ranks} for the parallel benchmarks")]
    if load_at_start is not None and hasattr(os, "getloadavg"):
        rows.append(("load average (1 min)", f"{load_at_start:.2f} before the benchmarks, {os.getloadavg()[0]:.2f} "
                     "after (above 0: other processes shared the cores)"))
    try:
        p = subprocess.run([sys.executable, "-m", "hpr", "config"], capture_output=True, text=True, timeout=120)
        cfg = (p.stdout + p.stderr).strip()
    except subprocess.TimeoutExpired:
        cfg = "python -m hpr config did not answer within 120 s"
    return rows, cfg


# (title, benchmarks, table builder (None: TABLES, per benchmark), [(chart file, chart builder, caption)])
SECTIONS = [
    ("Allreduce: hpr against MPI", ["allreduce"], allreduce_md,
     [("allreduce.png", allreduce_chart, "allreduce bus bandwidth and latency")]),
    ("Training throughput by preset and layout", ["train", "layouts"], None,
     [("training.png", training_chart, "tokens/s and MFU by preset and layout")]),
    ("Data-parallel weak scaling", ["dp"], dp_md,
     [("dp.png", dp_chart, "data-parallel weak scaling")]),
    ("Quantum state vectors", ["quantum-kernels"], quantum_md,
     [("quantum.png", quantum_chart, "gate bandwidth against copy bandwidth"),
      ("quantum_batched.png", batched_chart, "batched workload, circuits/s")]),
    ("Quantum targets (issue 21): hpr beside Lightning, numpy, PennyLane, JAX, Qiskit", ["quantum"],
     quantum_targets_md, []),
    ("Ranks waiting beside a computing rank (oversubscription)", ["oversubscribe"], oversubscribe_md, []),
    ("Text to token shards", ["data"], data_md, []),
    ("Memory: the planner against measured peaks; activation recomputation", ["scale"], None, []),
    ("Generation with the key/value cache", ["generate"], generate_md, []),
    ("Fused causal attention against torch's SDPA", ["attention"], attention_md, []),
]


def scale_md(runs, ctx):
    """hpr.bench scale: predicted vs measured peak RSS per run, and --recompute's memory and time vs none."""
    md = []
    for r in runs:
        d = r.data
        md += table(["preset", "layout", "predicted MiB", "measured MiB", "ratio"], [
            [x["preset"], f"dp {x['dp']} tp {x['tp']} pp {x['pp']}", fmt(x["predicted_mib"], ".1f"),
             fmt(x["peak_rss_mib"], ".1f"), fmt(x["ratio"], ".2f")] for x in d.get("runs", [])]) + [""]
        rec = d.get("recompute") or {}
        md += [f"--recompute on {rec.get('preset', '?')}, batch {rec.get('batch', '?')}, one thread (CPU time); "
               "reference: --recompute none, same run.", ""]
        md += table(["mode", "activations MiB", "vs none", "step ms", "vs none"], [
            [x["mode"], fmt(x["act_mib"], ".2f"), fmt(x["act_ratio"], ".2f"), fmt(x["step_ms"], ".1f"),
             fmt(x["time_ratio"], ".2f")] for x in rec.get("rows", [])])
    return md


TABLES = {"train": train_md, "layouts": layouts_md, "scale": scale_md}


def failure_md(r):
    tail = "\n".join(r.log.rstrip().splitlines()[-25:]) or "(no output)"
    return [f"**{r.name} FAILED**: {r.error} after {r.seconds:.1f} s. `{r.cmd}`; the last lines of "
            f"[{r.name}.log]({r.name}.log):", "", "```", tail, "```", ""]


def write_report(out, runs, command, machine_rows=(), config_text="", charts=True):
    """DIR/README.md (and the charts) from finished runs. Returns the chart files written. A run whose JSON
    the tables cannot read is marked failed here, with the reason."""
    plt = pyplot() if charts else None
    peaks = [r.data.get("matmul_gflops") for r in runs if r.bench == "train" and r.data and not r.failed]
    ctx = {"cores": os.cpu_count() or 1, "peak_gflops": max([p for p in peaks if p] or [0]) or None}
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    md = ["# hpr benchmarks", "", f"Made {now} on this machine by", "", "```", command, "```", "",
          "Every figure is beside a reference measured in the same run, and the ratio. The machine is shared and "
          "noisy: read ratios and medians, not single times. Each benchmark's own output is in its `.log`, its "
          "figures in its `.json`.", ""]
    md += table(["machine", ""], [list(r) for r in machine_rows]) if machine_rows else []
    if config_text:
        md += ["", "`python -m hpr config`:", "", "```", config_text, "```"]
    written, body = [], []
    for title, benches, build, charts_ in SECTIONS:
        mine = [r for r in runs if r.bench in benches]
        if not mine:
            continue
        body += ["", f"## {title}", ""]
        for b in benches:
            group = [r for r in mine if r.bench == b and not r.failed]
            maker = build or TABLES[b]
            try:
                body += (maker(group, ctx) + [""]) if group else []
            except Exception as e:  # a JSON of an unexpected shape: report it, do not lose the others
                for r in group:
                    r.error = f"the report could not read its JSON ({type(e).__name__}: {e})"
            body += [ln for r in mine if r.bench == b and r.failed for ln in failure_md(r)]
            body += [f"({r.name}: flags not declared by this version of the benchmark, left out: "
                     f"{', '.join(r.dropped)})" for r in mine if r.bench == b and r.dropped]
        ok = [r for r in mine if not r.failed]
        for fname, chart, caption in charts_:
            if not ok or plt is None:
                continue
            try:
                fig = chart(plt, ok, ctx)
            except Exception as e:
                body += [f"(chart {fname} could not be drawn: {type(e).__name__}: {e})"]
                continue
            if fig is not None:
                save_chart(fig, os.path.join(out, fname))
                written.append(fname)
                body += [f"![{caption}]({fname})", ""]
    summary = [[f"[{r.name}]({r.name}.log)", "FAILED: " + r.error if r.failed else "ok", f"{r.seconds:.1f}",
                f"`{r.cmd}`"] for r in runs]
    md += ["", "## Runs", ""] + table(["benchmark", "status", "seconds", "command"], summary)
    if plt is None and charts:
        md += ["", f"Charts skipped: matplotlib is not installed (`{PLOT_HINT}`, then rerun this command)."]
    write_atomic(os.path.join(out, "README.md"), "\n".join(md + body).rstrip() + "\n")
    return written


# ------------------------------------------------------------------------------------ main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m hpr.bench all", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for the report, logs, JSON and charts "
                    "(made if missing; its parent must exist)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, no PyTorch: a smoke run in seconds")
    ap.add_argument("--ranks", type=int, default=None, help="MPI ranks for the parallel benchmarks "
                    "(default: the cores, at least 2 and at most 4)")
    ap.add_argument("--only", metavar="NAMES", help="comma-separated subset of the plan (e.g. allreduce,quantum)")
    ap.add_argument("--no-charts", action="store_true", help="tables only, even when matplotlib is installed")
    a = ap.parse_args(argv)
    try:
        return run_all(a, argv)
    except HprError as e:
        print(f"python -m hpr.bench all: error: {e}", file=sys.stderr)
        return 2


def run_all(a, argv):
    cores = os.cpu_count() or 1
    ranks = a.ranks if a.ranks is not None else max(2, min(4, cores))
    if ranks < 1:
        raise ConfigError(f"--ranks must be at least 1, not {ranks}")
    if int(os.environ.get("PMI_SIZE", os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))) > 1:
        raise ConfigError("run `python -m hpr.bench all` as one plain process, not under mpiexec: it starts "
                          "mpiexec itself for the parallel benchmarks")
    out = os.path.abspath(a.out)
    if not os.path.isdir(os.path.dirname(out)):
        raise ConfigError(f"--out {a.out}: its parent folder {os.path.dirname(out)} does not exist")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"--out {a.out} is a file, not a folder")
    os.makedirs(out, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise ConfigError(f"--out {a.out}: this user cannot write there")
    todo = plan(a.quick, ranks, cores)
    if a.only:
        want = [w.strip() for w in a.only.split(",") if w.strip()]
        names = [n for n, *_ in todo]
        bad = [w for w in want if w not in names]
        if bad:
            raise ConfigError(f"--only {a.only}: {', '.join(bad)} not in the plan ({', '.join(names)})")
        todo = [t for t in todo if t[0] in want]
    mpiexec = find_mpiexec()
    limit = 120 if a.quick else 900
    command = shlex.join(["python", "-m", "hpr.bench", "all"] + list(argv))
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"hpr.bench all: {len(todo)} benchmark(s) into {out}; {ranks} MPI ranks on {cores} cores", flush=True)
    runs = []
    for i, (name, bench, n, flags) in enumerate(todo, 1):
        r = run_bench(name, bench, n, flags, out, a.out, limit, mpiexec)
        print(f"[{i}/{len(todo)}] {name:<14} {'FAILED: ' + r.error if r.failed else 'ok'} ({r.seconds:.1f} s)  "
              f"{r.cmd}", flush=True)
        runs.append(r)
    rows, cfg = machine(ranks, load0)
    charts = write_report(out, runs, command, rows, cfg, charts=not a.no_charts)
    failed = [r.name for r in runs if r.failed]
    print(f"report: {os.path.join(out, 'README.md')}" + (f"; charts: {', '.join(charts)}" if charts else
          "; no charts" + ("" if a.no_charts else f" (matplotlib missing: {PLOT_HINT})")))
    if failed:
        print(f"failed: {', '.join(failed)} (see their logs in {out})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
