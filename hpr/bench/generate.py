"""``python -m hpr.bench generate [--rows S,S-gpt2vocab,gpt2] [--threads 1] [--quick] [--json FILE]``: greedy decoding
with hpr's key/value cache, beside full recomputation (the whole window run again for every token, as
GPT.generate did before the cache) and, when transformers is installed, GPT2LMHeadModel.generate on
the same weights (converted by hpr.convert's table, loaded by from_pretrained in a subprocess with the
same thread count), all in the same run. Every figure is new tokens / wall-clock seconds of the whole
call (prompt included), the best of --repeats; the token sequences must be identical (exit 1 if not).
First it checks in float64 that each cached step's logits equal recomputation's within 1e-12.

Rows: S (context 128, prompt 16 + 112 new tokens: the cache fills the context), S-gpt2vocab (S's
width and depth with GPT-2's context 1024 and 50257-token vocabulary: prompt 16, 128 new), gpt2
(GPT-2's 124M shapes, random weights: prompt 16, 128 new; recomputation only over the first
--recompute-tokens, which favours it: its later tokens would cost more). --quick: row S only, 24 new
tokens, one repeat, the float64 check over 24 steps (a smoke run of a few seconds, as `bench all --quick`).
--json FILE: {"rows": [{"preset", "context", "new_tokens", "hpr_tok_s", "recompute_tok_s",
"transformers_tok_s"}]}, transformers_tok_s null when transformers is not installed (or skipped)."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from safetensors.numpy import save_file

from .. import cpu
from ..convert.layout import hf_config, to_hf_tensors
from ..model import GPT, GPTConfig, Sampler, generate
from . import write_json

ROWS = {  # name: (preset, overrides, prompt tokens, new tokens, recomputed tokens or None for all)
    "S": ("S", {}, 16, 112, None),
    "S-gpt2vocab": ("S", {"context": 1024, "vocab_size": 50257}, 16, 128, None),
    "gpt2": ("gpt2", {"vocab_size": 50257}, 16, 128, 16),
}

QUICK_TOKENS = 24  # --quick: new tokens per row, and steps of the float64 check


def recompute(model, prompt, n):
    """Greedy tokens the pre-cache way: the logits of the whole window, again for every token."""
    toks = list(prompt)
    for _ in range(n):
        toks.append(int(np.argmax(model.logits_last(np.array([toks[-model.config.context:]], np.int32))[0])))
    return toks[len(prompt):]


def best_of(fn, repeats):
    """(result, best wall seconds, best CPU seconds) of repeats calls."""
    wall, cpu_s, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu_s.append(time.process_time() - c0)
    return out, min(wall), min(cpu_s)


def check_float64(steps=112):
    """Cached decoding against recomputation at preset S in float64: (same tokens, max |logit diff|)."""
    m = GPT(GPTConfig.preset("S", dtype="float64"), seed=0)
    prompt = list(range(65, 81))
    cache = m.new_cache(1, m.config.context)
    z = m.prefill([prompt], cache)
    seq, worst = list(prompt), 0.0
    for i in range(steps):
        ref = m.logits_last(np.array([seq], np.int32))
        worst = max(worst, float(np.abs(ref - z).max()))
        seq.append(int(np.argmax(ref[0])))
        if i < steps - 1:
            z = m.decode_step(np.array([seq[-1]]), cache)
            cache.pos += 1
    return seq[len(prompt):] == generate(m, [prompt], steps, Sampler(0))[0], worst


def write_hf_model(folder, model):
    """The model as a GPT2LMHeadModel folder (weights and config; no tokenizer needed for ids)."""
    c = model.config
    save_file(to_hf_tensors({p.name: p.data for p in model.layout.entries}, c, c.vocab_size),
              os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(hf_config(c, c.vocab_size), f)


def transformers_available():
    return importlib.util.find_spec("transformers") is not None and importlib.util.find_spec("torch") is not None


def transformers_reference(folder, prompt, n, threads, repeats):
    """{"tokens", "wall", "cpu"} of GPT2LMHeadModel.generate (greedy) in a fresh process."""
    out = os.path.join(folder, "reference.json")
    cmd = [sys.executable, "-m", "hpr.bench.generate", "--hf-reference", folder, "--prompt-ids",
           ",".join(map(str, prompt)), "--new", str(n), "--threads", str(threads), "--repeats", str(repeats),
           "--out", out]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:  # its progress bars stay hidden unless it failed
        raise RuntimeError(f"the transformers reference failed:\n{done.stderr[-3000:]}")
    with open(out) as f:
        return json.load(f)


def run_reference(a):
    """The subprocess side: load with transformers, time greedy generate, write tokens and times."""
    import torch  # lazy: the reference runs in its own process; hpr never needs torch
    import transformers  # lazy: as torch

    torch.set_num_threads(a.threads)
    model = transformers.GPT2LMHeadModel.from_pretrained(a.hf_reference).eval()
    ids = torch.tensor([[int(t) for t in a.prompt_ids.split(",")]])
    kw = dict(max_new_tokens=a.new, min_new_tokens=a.new, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        out, wall, cpu_s = best_of(lambda: model.generate(ids, **kw), a.repeats)
    write_json(a.out, {"tokens": out[0, ids.shape[1]:].tolist(), "wall": wall, "cpu": cpu_s})
    return 0


def bench_row(name, a, use_hf):
    preset, over, n_prompt, n_new, n_re = ROWS[name]
    n_new = min(n_new, a.new_tokens) if a.new_tokens else n_new
    config = GPTConfig.preset(preset, **over)
    model = GPT(config, seed=0)
    prompt = [int(t) for t in np.random.default_rng(1).integers(0, config.vocab_size, n_prompt)]
    generate(model, [prompt], 4, Sampler(0))  # warm-up
    n_re = n_new if n_re is None else min(n_re, n_new)
    hw = hc = rw = rc = float("inf")
    for _ in range(a.repeats):  # alternate, so the machine's drift hits both
        hpr_tokens, w, c = best_of(lambda: generate(model, [prompt], n_new, Sampler(0))[0], 1)
        hw, hc = min(hw, w), min(hc, c)
        re_tokens, w, c = best_of(lambda: recompute(model, prompt, n_re), 1)
        rw, rc = min(rw, w), min(rc, c)
    row = {"preset": name, "context": config.context, "new_tokens": n_new, "prompt_tokens": n_prompt,
           "hpr_tok_s": n_new / hw, "recompute_tok_s": n_re / rw, "transformers_tok_s": None,
           "recomputed_tokens": n_re, "cpu_ratio_recompute": (n_new / hc) / (n_re / rc)}
    problems = [] if re_tokens == hpr_tokens[:n_re] else [f"{name}: cached and recomputed tokens differ"]
    if use_hf:
        with tempfile.TemporaryDirectory() as tmp:
            write_hf_model(tmp, model)
            ref = transformers_reference(tmp, prompt, n_new, a.threads, a.repeats)
        row["transformers_tok_s"] = n_new / ref["wall"]
        row["cpu_ratio_transformers"] = (n_new / hc) / (n_new / ref["cpu"])
        if ref["tokens"] != hpr_tokens:
            problems.append(f"{name}: transformers' tokens differ from hpr's")
    return row, problems


def table(rows):
    lines = [f"{'row':<12} {'context':>7} {'prompt':>6} {'new':>4} {'hpr tok/s':>10} {'recompute':>10} "
             f"{'x':>6} {'transformers':>12} {'x':>6}"]
    for r in rows:
        hf = r["transformers_tok_s"]
        rec = f"{r['recompute_tok_s']:.1f}" + ("*" if r["recomputed_tokens"] < r["new_tokens"] else "")
        lines.append(f"{r['preset']:<12} {r['context']:>7} {r['prompt_tokens']:>6} {r['new_tokens']:>4} "
                     f"{r['hpr_tok_s']:>10.1f} {rec:>10} {r['hpr_tok_s'] / r['recompute_tok_s']:>5.1f}x "
                     + (f"{hf:>12.1f} {r['hpr_tok_s'] / hf:>5.2f}x" if hf else f"{'n/a':>12} {'':>6}"))
    lines.append("(ratios of CPU time: " + "; ".join(
        f"{r['preset']} {r['cpu_ratio_recompute']:.1f}x recompute"
        + (f", {r['cpu_ratio_transformers']:.2f}x transformers" if r["transformers_tok_s"] else "") for r in rows)
        + ")")
    if any(r["recomputed_tokens"] < r["new_tokens"] for r in rows):
        lines.append("* recomputation timed over the first tokens only (shorter windows: in its favour)")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="S,S-gpt2vocab,gpt2", help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--threads", type=int, default=1, help="BLAS / kernel / torch threads (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of each, the best kept (default 3)")
    ap.add_argument("--no-transformers", action="store_true", help="skip the transformers reference")
    ap.add_argument("--quick", action="store_true", help="row S only, 24 new tokens, 1 repeat: a smoke run")
    ap.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    ap.add_argument("--hf-reference", help=argparse.SUPPRESS)  # the subprocess side
    ap.add_argument("--prompt-ids", help=argparse.SUPPRESS)
    ap.add_argument("--new", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.hf_reference:
        return run_reference(a)
    a.new_tokens = QUICK_TOKENS if a.quick else None
    if a.quick:
        a.rows, a.repeats = "S", 1
    names = [n for n in a.rows.split(",") if n]
    bad = [n for n in names if n not in ROWS]
    if bad or a.threads < 1 or a.repeats < 1:
        print(f"unknown row(s) {bad} (choose from {', '.join(ROWS)}), or --threads / --repeats below 1")
        return 2
    cpu.set_num_threads(a.threads)
    use_hf = not a.no_transformers and transformers_available()
    print(f"hpr.bench generate: greedy, float32, {a.threads} thread(s), best of {a.repeats}; {cpu.cpu_model()} "
          f"({cpu.cpu_count()} cores); transformers reference: {'yes' if use_hf else 'not installed or skipped'}")
    steps = a.new_tokens or 112
    same, worst = check_float64(steps)
    print(f"cache vs recomputation, float64, preset S, {steps} tokens: {'same' if same else 'DIFFERENT'} greedy tokens, "
          f"max |logit difference| {worst:.2e} (must be <= 1e-12)", flush=True)
    problems = [] if same and worst <= 1e-12 else ["float64: the cache does not equal recomputation"]
    rows = []
    for name in names:
        row, p = bench_row(name, a, use_hf)
        rows.append(row)
        problems += p
        print(f"  {name}: hpr {row['hpr_tok_s']:.1f} tok/s", flush=True)
    print(table(rows))
    if a.json:
        write_json(a.json, {"rows": [{k: r[k] for k in ("preset", "context", "new_tokens", "hpr_tok_s",
                                                          "recompute_tok_s", "transformers_tok_s")} for r in rows]})
    for p in problems:
        print(f"FAILED: {p}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
