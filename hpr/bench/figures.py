"""Tables (Markdown) and charts (matplotlib figures) from the benchmarks' JSON, for ``python -m hpr.bench
all`` (hpr/bench/report.py runs the benchmarks and assembles the report). Owns the reading of each
benchmark's JSON, tolerant of missing keys (a figure that is not there is a dash); it runs nothing and
writes no file. Each ``*_md(runs, ctx)`` returns Markdown lines, each ``*_chart(plt, runs, ctx)`` a figure.

    lines = allreduce_md([run], ctx); fig = allreduce_chart(plt, [run], ctx)
"""
import re

from hpr.model import GPTConfig

MIB = 2 ** 20


def fmt(x, spec):
    """x formatted, or a dash for a missing figure."""
    return "–" if x is None else format(x, spec)


def is_figure(c):
    return re.fullmatch(r"[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?|–|", str(c).strip()) is not None


def table(head, rows):
    """A Markdown table: columns of figures right-aligned, the others left-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    right = [j > 0 and all(is_figure(r[j]) for r in rows) for j in range(len(head))]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if r else ":---" for r in right) + "|"]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def human_bytes(n):
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:g} {unit}"
    return f"{n} B"


def allreduce_md(runs, ctx):
    md = []
    for r in runs:
        d = r.data
        md += [f"{d.get('ranks', '?')} ranks, float32 sum in place, {' '.join(d.get('mpi', 'MPI ?').split())}. "
               "Reference: the MPI library's own `MPI_Allreduce(IN_PLACE)`, same run; x = hpr bus bandwidth / "
               "MPI's. *hpr*: a buffer from `comm.alloc()` (where hpr keeps gradients); *hpr (numpy)*: a plain "
               "numpy array. Bus bandwidth = bytes / time × 2(n-1)/n.", ""]
        rows = []
        for w in d.get("rows", []):
            mb = w.get("mpi_busbw_gbps")
            x = lambda k: fmt(w[k] / mb, ".2f") if w.get(k) is not None and mb else "–"
            rows.append([human_bytes(w.get("bytes", 0)), w.get("algorithm", ""), fmt(w.get("mpi_us"), ".1f"),
                         fmt(mb, ".3f"), fmt(w.get("hpr_us"), ".1f"), fmt(w.get("hpr_busbw_gbps"), ".3f"),
                         x("hpr_busbw_gbps"), fmt(w.get("hpr_numpy_us"), ".1f"),
                         fmt(w.get("hpr_numpy_busbw_gbps"), ".3f"), x("hpr_numpy_busbw_gbps")])
        md += table(["message", "algorithm", "MPI µs", "MPI GB/s", "hpr µs", "hpr GB/s", "x",
                     "hpr (numpy) µs", "GB/s", "x"], rows)
    return md


def train_md(runs, ctx):
    rows, refs = [], []
    for r in runs:
        d = r.data
        ratio = d.get("ratio_hpr_over_torch")
        refs.append(f"{d.get('preset')}: numpy float32 matmul {fmt(d.get('matmul_gflops'), '.1f')} GFLOP/s"
                    + (f" (torch's own: {fmt(d.get('torch_matmul_gflops'), '.1f')})" if d.get("torch_matmul_gflops")
                       else ""))
        for w in d.get("rows", []):
            rows.append([d.get("preset", "?"), d.get("batch", "?"), d.get("threads", "?"), w.get("name", "?"),
                         fmt(w.get("step_ms"), ".1f"), fmt(w.get("tokens_per_s"), ",.0f"), fmt(w.get("mfu"), ".0%"),
                         fmt(ratio, ".2f") if w.get("name") == "hpr" else ""])
    if not any(len(r.data.get("rows", [])) > 1 for r in runs):
        refs.append("PyTorch was not run (not installed, or --quick): no side-by-side row")
    return (["One training step of the GPT (forward, backward, gradient norm, AdamW), median over the timed "
             "steps; PyTorch eager runs the same model and recipe with the same threads. MFU = tokens/s × "
             "FLOPs per token / the float32 matmul FLOP/s numpy reaches in the same run (reference: "
             + "; ".join(refs) + ").", ""]
            + table(["preset", "batch", "threads", "", "ms/step", "tokens/s", "MFU", "hpr/torch"], rows))


def data_md(runs, ctx):
    """hpr.bench data: prepare against the tokenizers library's own encode_batch on the same documents."""
    md = []
    for r in runs:
        d = r.data
        mb = (d.get("bytes") or 0) / 1e6
        rate = lambda k: fmt(mb / d[k], ".2f") if d.get(k) else "–"
        md += [f"{d.get('documents', '?')} documents, {mb:.1f} MB{' (--quick: every 8th file)' if d.get('quick') else ''}, "
               f"a byte-level BPE of {d.get('vocab_size', '?')} tokens, tokenizers {d.get('tokenizers', '?')}, "
               f"{d.get('cores', '?')} cores ({d.get('cpu', '?')}). Reference: the library's own `encode_batch` of "
               "the same documents already in memory, same run; x = its time / prepare's (target >= 0.8: hpr's "
               "reading, splitting and writing cost at most 20%). CPU s: the process's, all threads.", ""]
        md += table(["tokenising", "seconds", "MB/s", "CPU s", "x"], [
            ["hpr prepare (read, encode, split, write)", fmt(d.get("prepare_s"), ".2f"), rate("prepare_s"),
             fmt(d.get("prepare_cpu_s"), ".2f"), ""],
            ["tokenizers encode_batch", fmt(d.get("encode_batch_s"), ".2f"), rate("encode_batch_s"),
             fmt(d.get("encode_batch_cpu_s"), ".2f"), fmt(d.get("ratio_vs_encode_batch"), ".2f")],
            ["tokenizers encode_batch_fast", fmt(d.get("encode_batch_fast_s"), ".2f"), rate("encode_batch_fast_s"),
             fmt(d.get("encode_batch_fast_cpu_s"), ".2f"), fmt(d.get("ratio_vs_encode_batch_fast"), ".2f")]])
        md += ["", f"Training the BPE {fmt(d.get('train_s'), '.1f')} s + prepare {fmt(d.get('prepare_s'), '.1f')} s = "
               f"{fmt(d.get('train_plus_prepare_s'), '.1f')} s (target <= 60 s on 2 cores for the whole corpus)"
               + ("; problems: " + "; ".join(d["problems"]) if d.get("problems") else
                  "; the shards equal the library's encoding and every document round-trips.")]
    return md


def layout_mfu(d, ctx):
    """The MFU of a layouts row against the matmul peak the train runs measured (1 thread) times the cores
    the job used, or None without a train run."""
    peak = ctx.get("peak_gflops")
    try:
        ftok = GPTConfig.preset(d["preset"]).flops_per_token()
    except Exception:  # a preset this version does not know (an older JSON): no MFU column
        return None
    if not peak:
        return None
    cores = min(d.get("ranks", 1) * (d.get("threads") or 1), ctx.get("cores", 1))
    return lambda tps: tps * ftok / (peak * 1e9 * cores)


def layouts_md(runs, ctx):
    md = []
    for r in runs:
        d = r.data
        mfu = layout_mfu(d, ctx)
        ref = d.get("reference") or {}
        md += [f"Preset {d.get('preset')}, {d.get('ranks')} ranks × {d.get('threads')} thread(s), batch "
               f"{d.get('batch')} × {d.get('context')} tokens per step in {d.get('micro_batches')} micro-batches, "
               f"median of {d.get('steps')} steps. Reference: the data-parallel layout "
               f"{' × '.join(map(str, ref.get('layout') or ['?']))} in the "
               f"same run, {fmt(ref.get('tokens_per_s'), ',.0f')} tokens/s; x = tokens/s over that."
               + (" MFU against the train benchmark's 1-thread matmul peak × the cores the job used."
                  if mfu else ""), ""]
        rows = []
        for w in d.get("rows", []):
            mem = (w.get("mem_bytes") or {}).get("total")
            rows.append([f"{w.get('dp')} × {w.get('tp')} × {w.get('pp')}", fmt(w.get("step_ms"), ".1f"),
                         fmt(w.get("tokens_per_s"), ",.0f"), fmt(w.get("ratio_vs_dp"), ".2f"),
                         fmt(mfu(w["tokens_per_s"]), ".0%") if mfu and w.get("tokens_per_s") else "–",
                         fmt(mem / MIB if mem else None, ".2f"), fmt(w.get("bubble"), ".1%"),
                         fmt(w.get("bubble_theory"), ".1%"),
                         *(fmt(w[k] / MIB if w.get(k) is not None else None, ".2f")
                           for k in ("dp_bytes", "tp_bytes", "pp_bytes"))])
        md += table(["dp × tp × pp", "ms/step", "tokens/s", "x", "MFU", "MiB/rank", "bubble", "theory",
                     "dp MiB/step", "tp MiB/step", "pp MiB/step"], rows)
        for s in d.get("skipped", []):
            md.append(f"\nskipped {s.get('layout')}: {s.get('why')}")
    return md


def dp_md(runs, ctx):
    md = []
    for r in runs:
        d = r.data
        ref = d.get("reference") or {}
        md += [f"Preset {d.get('preset')}, {d.get('batch_per_rank')} sequences per rank per step (weak scaling), "
               f"{d.get('threads')} thread(s) per rank. Reference: 1 rank in the same run, "
               f"{fmt(ref.get('hpr_tokens_per_s'), ',.0f')} tokens/s (ideal = k × that); PyTorch DDP (gloo): "
               + (f"torch {d['torch']}, {fmt(ref.get('torch_tokens_per_s'), ',.0f')} tokens/s on 1 rank."
                  if d.get("torch") else "not run.") + " comm = time waiting for gradients / step time.", ""]
        rows = [[w.get("k"), fmt(w.get("hpr_step_ms"), ".1f"), fmt(w.get("hpr_tokens_per_s"), ",.0f"),
                 fmt(w.get("hpr_ideal_tokens_per_s"), ",.0f"), fmt(w.get("hpr_efficiency"), ".0%"),
                 fmt(w.get("hpr_exposed_comm"), ".1%"), fmt(w.get("torch_tokens_per_s"), ",.0f"),
                 fmt(w.get("torch_efficiency"), ".0%"), fmt(w.get("ratio_hpr_over_torch"), ".2f")]
                for w in d.get("rows", [])]
        md += table(["ranks", "hpr ms/step", "hpr tokens/s", "ideal", "efficiency", "comm", "DDP tokens/s",
                     "DDP efficiency", "hpr/DDP"], rows)
    return md


def other_sims(rows):
    """Names of the other simulators timed beside hpr: keys <name>_us in the gate rows."""
    names = []
    for w in rows:
        names += [k[:-3] for k in w if k.endswith("_us") and k != "copy_us" and k[:-3] not in names]
    return names


def batched_rows(b):
    """[(simulator, mode, circuits/s)] of the batched workload, from either JSON shape: *_cps keys
    (<sim>_forward[_grad]_cps), or the older hpr/numpy µs per state (one state = one circuit)."""
    out = []
    for k, v in b.items():
        m = re.fullmatch(r"(.+?)_(forward_grad|forward)_cps", k)
        if m and v is not None:
            out.append((m[1], "forward + gradient" if m[2] == "forward_grad" else "forward", v))
    for sim in ("hpr", "numpy"):
        if f"{sim}_us_per_state" in b:
            out.append((sim, "forward + expectations", 1e6 / b[f"{sim}_us_per_state"]))
    return sorted(out, key=lambda r: (r[1], r[0] != "hpr", r[0] != "numpy"))  # by mode: hpr, numpy, the others


def quantum_targets_md(runs, ctx):
    """`python -m hpr.bench quantum` (hpr.bench.quantum_suite): each of issue 21's targets, held or not, with
    the gates slower than Lightning listed (x = Lightning's time / hpr's; < 1: hpr slower)."""
    md = []
    for r in runs:
        d = r.data
        g = d.get("gates") or {}
        rows = [w for w in g.get("rows", []) if "ratio" in w]
        if rows:
            miss = sorted((w for w in rows if w["ratio"] < 1), key=lambda w: w["ratio"])
            md += [f"Gates ≤ Lightning's time (one state, complex128, 1 thread): {len(rows) - len(miss)} of "
                   f"{len(rows)} hold, n = {', '.join(str(n) for n in sorted({w['n'] for w in rows}))}.", ""]
            md += table(["n", "gate", "qubits", "hpr µs", "lightning µs", "x"],
                        [[w["n"], w["gate"], str(w["qubits"]), fmt(w["hpr_us"], ".1f"), fmt(w["lightning_us"], ".1f"),
                          fmt(w["ratio"], ".2f")] for w in miss[:40]]) if miss else []
        b = d.get("batched")
        if b:
            md += ["", f"Batched {b['circuits']} circuits × 8 qubits: forward {b['numpy_fwd_s'] / b['hpr_fwd_s']:.1f}× "
                   "vectorised numpy (target ≥ 10×)."]
            md += [f"Forward + gradient: {t / b['hpr_fwd_grad_s']:.1f}× {k} (target ≥ 5×)."
                   for k, t in b.get("alternatives_fwd_grad_s", {}).items()]
        q = d.get("qasm")
        if q:
            x = (q["qiskit_parse_s"] + q["qiskit_statevector_s"]) / (q["hpr_parse_s"] + q["hpr_run_s"])
            md += ["", f"QASM, {q['gates']} gates parsed and run: {x:.1f}× Qiskit's reader + Statevector (target ≥ 3×)."]
    return md


def quantum_md(runs, ctx):
    md = []
    for r in runs:
        d = r.data
        rows = d.get("rows", [])
        sims = other_sims(rows)
        md += [f"One state, complex128, {d.get('threads', '?')} thread(s) for hpr; median time per gate; "
               "GB/s = 2 × 16 × 2^n bytes / time. Reference: numpy's copy of the same array (`np.copyto`), same "
               "run; x = hpr GB/s / copy GB/s."
               + (f" Also timed: {', '.join(sims)} (x = their time / hpr's)." if sims else
                  " No other simulator (qulacs, qiskit-aer, pennylane-lightning) is installed."), ""]
        body = []
        for w in rows:
            line = [w.get("n"), w.get("gate"), fmt(w.get("us"), ".1f"), fmt(w.get("gbps"), ".2f"),
                    fmt(w.get("copy_gbps"), ".2f"), fmt(w.get("ratio_to_copy"), ".2f")]
            for s in sims:
                o = w.get(f"{s}_us")
                line += [fmt(o, ".1f"), fmt(o / w["us"], ".2f") if o is not None and w.get("us") else "–"]
            body.append(line)
        md += table(["n", "gate", "hpr µs", "GB/s", "copy GB/s", "x"] + [h for s in sims for h in (f"{s} µs", "x")],
                    body)
        c = d.get("circuit20")
        if c:
            base = c.get("hpr_us")
            md += ["", f"The 20-gate circuit on {c.get('n')} qubits, one state (which gates: quantum.log); x = time "
                   "/ hpr's (compiled):", ""]
            md += table(["", "µs", "x"], [[k[:-3].replace("_", " "), fmt(v, ",.1f"), fmt(v / base, ".2f") if base
                                           else "–"] for k, v in c.items() if k.endswith("_us") and v is not None])
        b = d.get("batched")
        if b:
            br = batched_rows(b)
            numpy = {mode: v for sim, mode, v in br if sim == "numpy"}
            shape = (f"{b.get('circuits', b.get('states'))} circuits of {b.get('qubits')} qubits"
                     + (f", {b['layers']} layers" if b.get("layers") else ""))
            md += ["", f"Batched workload: {shape}. Reference: the same circuits in vectorised numpy, same run; "
                   "x = circuits/s over numpy's in the same mode.", ""]
            md += table(["", "mode", "circuits/s", "x"],
                        [[sim, mode, fmt(v, ",.0f"), fmt(v / numpy[mode], ".2f") if numpy.get(mode) else "–"]
                         for sim, mode, v in br])
    return md


def oversubscribe_md(runs, ctx):
    md = []
    for r in runs:
        d = r.data
        md += [f"{d.get('setup', '')}. One rank computes while the others wait in a barrier; reference: the "
               "same computation with the others asleep, same run (x = time / that).", ""]
        md += table(["the other ranks", "compute ms", "x"],
                    [[w["case"], fmt(w["compute_ms"], ".1f"), fmt(w["vs_alone"], ".2f")] for w in d.get("rows", [])])
    return md


def generate_md(runs, ctx):
    """hpr.bench generate: greedy decoding with the key/value cache beside recomputation and transformers."""
    rows = []
    for r in runs:
        for w in r.data.get("rows", []):
            hpr_, rec, hf = w.get("hpr_tok_s"), w.get("recompute_tok_s"), w.get("transformers_tok_s")
            rows.append([w.get("preset", "?"), w.get("context", "?"), w.get("new_tokens", "?"), fmt(hpr_, ",.1f"),
                         fmt(rec, ",.1f"), fmt(hpr_ / rec, ".1f") if hpr_ and rec else "–", fmt(hf, ",.1f"),
                         fmt(hpr_ / hf, ".2f") if hpr_ and hf else "–"])
    return (["Greedy decoding, new tokens per second of the whole call (prompt 16 tokens), 1 thread. References, "
             "same run and same weights: recomputing the whole window for every token (hpr without the cache) "
             "and transformers' GPT2LMHeadModel.generate (– where it is not installed); the tokens are checked "
             "equal.", ""]
            + table(["row", "context", "new tokens", "hpr tok/s", "recompute tok/s", "x", "transformers tok/s",
                     "x"], rows))


def attention_md(runs, ctx):
    """hpr.bench attention: fused causal attention forward + backward beside torch's SDPA, per (T, D)."""
    rows = []
    for r in runs:
        for w in r.data.get("rows", []):
            rows.append([w.get("T", "?"), w.get("D", "?"), w.get("B", "?"), fmt(w.get("hpr_ms"), ".2f"),
                         fmt(w.get("hpr_gflops"), ".1f"), fmt(w.get("torch_ms"), ".2f"), fmt(w.get("ratio"), ".2f"),
                         fmt(w.get("hpr_bytes", 0) / 2**20, ".2f"), fmt(w.get("probabilities_bytes", 0) / 2**20, ".2f")])
    return (["Causal attention, forward + backward (4 heads), hpr's fused kernel beside torch's "
             "scaled_dot_product_attention with autograd on the same inputs (– where torch is not installed); "
             "y and dL/dqkv are checked against torch's before timing. hpr MiB: what hpr keeps (O(T)); P MiB: "
             "the probabilities an unfused kernel keeps.", ""]
            + table(["T", "D", "B", "hpr ms", "GFLOP/s", "torch ms", "torch/hpr", "hpr MiB", "P MiB"], rows))


# ------------------------------------------------------------------------------------ charts
def thousands():
    from matplotlib.ticker import FuncFormatter  # lazy: matplotlib is optional (the plot extra)

    return FuncFormatter(lambda v, _: f"{v:,.0f}")


def allreduce_chart(plt, runs, ctx=None):
    d = runs[0].data
    rows = d.get("rows", [])
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [w["bytes"] for w in rows]
    for key, label, style in (("mpi", "MPI_Allreduce", "k--o"), ("hpr", "hpr (comm.alloc buffer)", "C0-o"),
                              ("hpr_numpy", "hpr (numpy array)", "C1-s")):
        bw = [w.get(f"{key}_busbw_gbps") for w in rows]
        if any(v is not None for v in bw):
            ax[0].plot(x, bw, style, label=label, ms=4)
            ax[1].plot(x, [w.get(f"{key}_us") for w in rows], style, label=label, ms=4)
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # lazy: matplotlib is optional

    ticks = x[::max(1, -(-len(x) // 6))]  # at most 6 labels
    label = FuncFormatter(lambda v, _: f"{v:g}")
    for a, yl in zip(ax, ("bus bandwidth, GB/s", "latency, µs (median)")):
        a.set_xscale("log", base=2)
        a.set_yscale("log")
        a.xaxis.set_major_locator(FixedLocator(ticks))
        a.xaxis.set_major_formatter(FuncFormatter(lambda v, _: human_bytes(int(v)).replace(" ", "")))
        a.xaxis.set_minor_formatter(NullFormatter())
        lo, hi = a.get_ylim()
        a.yaxis.set_major_formatter(label)
        a.yaxis.set_minor_formatter(label if hi / lo < 20 else NullFormatter())  # under a decade: label 2, 3, 5..
        a.set_xlabel("message size")
        a.set_ylabel(yl)
        a.grid(True, which="both", alpha=0.3)
    ax[0].legend()
    fig.suptitle(f"allreduce, {d.get('ranks')} ranks on one node ({' '.join(d.get('mpi', '').split())})")
    return fig


def training_chart(plt, runs, ctx):
    trains = [r.data for r in runs if r.bench == "train"]
    lays = [r.data for r in runs if r.bench == "layouts"]
    panels = (2 if trains else 0) + len(lays)
    if not panels:
        return None
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 4.2), squeeze=False)
    axes = list(axes[0])
    if trains:
        impls = []
        for d in trains:
            impls += [w["name"] for w in d.get("rows", []) if w["name"] not in impls]
        width = 0.8 / len(impls)
        for i, name in enumerate(impls):
            for ax, key in zip(axes[:2], ("tokens_per_s", "mfu")):
                v = [next((w.get(key) or 0 for w in d.get("rows", []) if w["name"] == name), 0) for d in trains]
                v = [x * 100 for x in v] if key == "mfu" else v
                ax.bar([j + i * width for j in range(len(trains))], v, width, label=name, color=f"C{i}")
        axes[0].yaxis.set_major_formatter(thousands())
        for ax, yl in zip(axes[:2], ("tokens/s", "MFU, % of numpy's matmul FLOP/s")):
            ax.set_xticks([j + 0.4 - width / 2 for j in range(len(trains))])
            ax.set_xticklabels([f"preset {d.get('preset')}\n({d.get('threads')} thread)" for d in trains])
            ax.set_ylabel(yl)
            ax.grid(True, axis="y", alpha=0.3)
        axes[0].legend()
        axes[0].set_title("one training step")
        axes[1].set_title("model FLOPs utilisation")
    for ax, d in zip(axes[2 if trains else 0:], lays):
        rows = d.get("rows", [])
        tps = [w.get("tokens_per_s") or 0 for w in rows]
        bars = ax.bar(range(len(rows)), tps, color="C0")
        mfu = layout_mfu(d, ctx)
        if mfu:
            ax.bar_label(bars, [f"{mfu(t):.0%} MFU" for t in tps], fontsize=8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([f"{w.get('dp')}×{w.get('tp')}×{w.get('pp')}" for w in rows])
        ax.set_xlabel("layout dp × tp × pp")
        ax.set_ylabel("tokens/s (job)")
        ax.yaxis.set_major_formatter(thousands())
        ax.set_title(f"layouts, preset {d.get('preset')}, {d.get('ranks')} ranks")
        ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def dp_chart(plt, runs, ctx=None):
    d = runs[0].data
    rows = d.get("rows", [])
    fig, ax = plt.subplots(figsize=(6, 4.2))
    k = [w["k"] for w in rows]
    ax.plot(k, [w.get("hpr_ideal_tokens_per_s") for w in rows], "k:", label="ideal (k × 1 rank)")
    ax.plot(k, [w.get("hpr_tokens_per_s") for w in rows], "C0-o", label="hpr DataParallel")
    if any(w.get("torch_tokens_per_s") for w in rows):
        ax.plot(k, [w.get("torch_tokens_per_s") for w in rows], "C1-s", label=f"PyTorch DDP {d.get('torch')}")
    ax.set_xticks(k)
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(thousands())
    ax.set_xlabel("ranks")
    ax.set_ylabel("tokens/s (job)")
    ax.set_title(f"data-parallel weak scaling, preset {d.get('preset')}, {d.get('batch_per_rank')} seq/rank")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return fig


def generic_gate(label, n):
    """A gate label with its qubit numbers written in terms of n: "CNOT 0,15" at n=16 -> "CNOT 0,(n-1)"."""
    return re.sub(r"\d+", lambda m: {n - 1: "(n-1)", n // 2: "(n/2)"}.get(int(m[0]), m[0]), label)


def quantum_chart(plt, runs, ctx=None):
    d = runs[0].data
    rows = d.get("rows", [])
    ns = sorted({w["n"] for w in rows})
    if not ns:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    gates = {}  # "H q8" at n=16 and "H q9" at n=18 are one line, "H q(n/2)"
    for w in rows:
        gates.setdefault(generic_gate(w["gate"], w["n"]), []).append((w["n"], w["gbps"]))
    for i, (g, pts) in enumerate(gates.items()):
        ax.plot(*zip(*pts), "-o", ms=4, color=f"C{i % 10}", label=f"hpr {g}")
    copy = {w["n"]: w.get("copy_gbps") for w in rows if w.get("copy_gbps")}
    ax.plot(list(copy), list(copy.values()), "k--s", lw=2, ms=7, mfc="none", label="numpy copy (reference)")
    for j, s in enumerate(other_sims(rows)):
        med = []
        for n in ns:
            v = sorted(32 * 2 ** n / (w[f"{s}_us"] * 1e-6) / 1e9 for w in rows if w["n"] == n and w.get(f"{s}_us"))
            if v:
                med.append((n, v[len(v) // 2]))
        if med:
            ax.plot(*zip(*med), ":^", ms=6, color=f"C{(len(gates) + j) % 10}", label=f"{s} (median over gates)")
    ax.set_xticks(ns)
    ax.set_xlabel("qubits n (one complex128 state of 16 · 2^n bytes)")
    ax.set_ylabel("GB/s (state read + written once per gate)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"state-vector gates, {d.get('threads', '?')} thread(s)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def batched_chart(plt, runs, ctx=None):
    b = runs[0].data.get("batched")
    br = batched_rows(b) if b else []
    if not br:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(br) + 1.5))
    colors = {"hpr": "C0", "numpy": "C7"}
    bars = ax.barh([f"{sim}: {mode}" for sim, mode, _ in br], [v for _, _, v in br],
                   color=[colors.get(sim, "C1") for sim, _, _ in br])
    ax.bar_label(bars, [f"{v:,.0f}" for _, _, v in br], fontsize=8)
    ax.invert_yaxis()
    vals = [v for _, _, v in br if v > 0]
    if vals and max(vals) > 50 * min(vals):
        ax.set_xscale("log")
    ax.set_xlabel("circuits/s" + (" (log scale)" if ax.get_xscale() == "log" else ""))
    ax.xaxis.set_major_formatter(thousands())
    ax.set_title(f"batched workload: {b.get('circuits', b.get('states'))} circuits of {b.get('qubits')} qubits")
    ax.grid(True, axis="x", alpha=0.3)
    ax.margins(x=0.15)
    return fig
