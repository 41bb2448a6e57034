"""``python -m hpr.bench attention [--threads K] [--T 128,256,512,1024] [--D 32,64] [--json FILE]``: hpr's
fused causal attention, forward + backward, beside ``torch.nn.functional.scaled_dot_product_attention``
(causal, autograd) on the same inputs, layout and thread count when PyTorch is installed, with the ratio;
y and dL/dqkv are checked against torch's first (relative 1e-3, else exit 2).

Both start from one fused qkv buffer (B*T, 3C) with heads side by side, as the GPT layer holds it, and
end with dL/dqkv: hpr through hpr.kernels.nn.attention_forward/backward, torch through split, view,
transpose, SDPA and autograd (what torch's GPT does). hpr and torch alternate step by step so drift on a
noisy machine hits both; medians are compared. GFLOP/s counts the causal half of the seven products
(two forward, five backward). Memory: what hpr's attention keeps between forward and backward plus its
scratch, beside the (B, H, T, T) probabilities an unfused kernel keeps.

Owns only this measurement; the kernels are hpr.kernels.nn. Usage: ``python -m hpr.bench attention --T 256``."""
import argparse
import statistics
import sys
import time

import numpy as np

from .. import cpu
from ..kernels import nn as K
from . import check_agree, torch_reference, write_json


def _hpr_step(b, t, h, d, dtype, seed):
    """A closure that runs one forward + backward of hpr's attention on fixed random inputs, the bytes
    the attention holds (saved lse + per-thread scratch), and (qkv, dy, y, dqkv) after its first step."""
    rng = np.random.default_rng(seed)
    c = h * d
    qkv = rng.standard_normal((b * t, 3 * c)).astype(dtype)  # (B*T, 3C)
    dy = rng.standard_normal((b * t, c)).astype(dtype)
    y, dqkv = np.empty((b * t, c), dtype), np.empty_like(qkv)
    saved = np.empty(K.attention_saved_shape(b, h, t), dtype)

    def step():
        K.attention_forward(qkv, b, t, h, saved, y)
        K.attention_backward(dy, y, saved, qkv, b, t, h, dqkv)

    step()
    return step, saved.nbytes + K.attention_scratch_bytes(t, d, dtype), (qkv, dy, y, dqkv)


def _torch_step(b, t, h, d, threads, arrays):
    """The same with torch's SDPA (causal) and autograd, float32, on hpr's inputs (qkv, dy of `arrays`);
    after its first step it checks y and dL/dqkv against hpr's (check_agree: exit 2 when they differ)."""
    import torch  # lazy: optional reference, and its threads start only when asked for
    import torch.nn.functional as F  # lazy: as above

    torch.set_num_threads(threads)
    c = h * d
    qkv_np, dy_np, y_hpr, dqkv_hpr = arrays
    qkv = torch.from_numpy(qkv_np.astype(np.float32).reshape(b, t, 3 * c)).requires_grad_(True)  # (B, T, 3C)
    dy = torch.from_numpy(dy_np.astype(np.float32).reshape(b, t, h, d)).transpose(1, 2).contiguous()  # B,H,T,D
    out = {}

    def step():
        q, k, v = (x.view(b, t, h, d).transpose(1, 2) for x in qkv.split(c, dim=2))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.backward(dy)
        out["y"], out["g"] = y, qkv.grad
        qkv.grad = None

    step()
    y_t = out["y"].detach().transpose(1, 2).reshape(b * t, c).numpy()
    g_t = out["g"].reshape(b * t, 3 * c).numpy()
    err = max(np.abs(y_t - y_hpr).max() / max(np.abs(y_t).max(), 1e-30),
              np.abs(g_t - dqkv_hpr).max() / max(np.abs(g_t).max(), 1e-30))
    check_agree(f"attention T={t} D={d} (y and dL/dqkv against torch's SDPA)", float(err), 1e-3)
    return step


def _timed(step):
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def measure(t, d, heads, tokens, threads, repeats, dtype=np.float32, with_torch=True):
    """One row: medians of `repeats` alternating hpr / torch steps at (T, D)."""
    b = max(1, tokens // t)
    hpr_step, held, arrays = _hpr_step(b, t, heads, d, dtype, seed=t + d)
    torch_step = _torch_step(b, t, heads, d, threads, arrays) if with_torch else None
    ht, tt = [], []
    for _ in range(repeats):
        ht.append(_timed(hpr_step))
        if torch_step:
            tt.append(_timed(torch_step))
    flops = 7 * d * t * (t + 1) * b * heads  # 7 products x 2 FLOPs x D x T(T+1)/2 causal pairs, per head
    row = {"T": t, "D": d, "B": b, "H": heads, "hpr_ms": statistics.median(ht) * 1e3,
           "hpr_gflops": flops / statistics.median(ht) / 1e9, "hpr_bytes": held,
           "probabilities_bytes": b * heads * t * t * np.dtype(dtype).itemsize}
    if torch_step:
        row["torch_ms"] = statistics.median(tt) * 1e3
        row["ratio"] = row["torch_ms"] / row["hpr_ms"]
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench attention", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="threads for hpr's kernels and torch (default 1)")
    ap.add_argument("--T", default="128,256,512,1024", help="sequence lengths, comma separated")
    ap.add_argument("--D", default="32,64", help="head sizes, comma separated")
    ap.add_argument("--heads", type=int, default=4, help="heads per sequence (default 4)")
    ap.add_argument("--tokens", type=int, default=2048, help="B*T per step: B = tokens // T (default 2048)")
    ap.add_argument("--repeats", type=int, default=9, help="timed steps of each (default 9)")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"), help="hpr's dtype (torch: float32)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference even if installed")
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    a = ap.parse_args(argv)
    cpu.set_num_threads(a.threads)
    tv = None if a.no_torch else torch_reference.available()
    now, have = cpu.isa()
    print(f"hpr.bench attention: causal, forward + backward, {a.threads} thread(s), {a.heads} heads, "
          f"{a.tokens} tokens per step, hpr {a.dtype} kernels at {now} (CPU has {', '.join(have)})")
    print(f"reference: {'torch ' + tv + ' scaled_dot_product_attention (float32, autograd)' if tv else 'none'}")
    print(f"\n{'T':>6}{'D':>5}{'B':>4}{'hpr ms':>10}{'GFLOP/s':>9}{'torch ms':>10}{'torch/hpr':>10}"
          f"{'hpr MiB':>9}{'P MiB':>9}")
    rows = []
    for d in (int(x) for x in a.D.split(",")):
        for t in (int(x) for x in a.T.split(",")):
            r = measure(t, d, a.heads, a.tokens, a.threads, a.repeats, np.dtype(a.dtype), bool(tv))
            rows.append(r)
            tcol = f"{r['torch_ms']:>10.2f}{r['ratio']:>9.2f}x" if tv else f"{'-':>10}{'-':>10}"
            print(f"{t:>6}{d:>5}{r['B']:>4}{r['hpr_ms']:>10.2f}{r['hpr_gflops']:>9.1f}{tcol}"
                  f"{r['hpr_bytes'] / 2**20:>9.2f}{r['probabilities_bytes'] / 2**20:>9.2f}", flush=True)
    print("\nhpr MiB: the saved row log-sum-exp plus the kernels' scratch (O(T)); P MiB: the (B, H, T, T) "
          "probabilities an unfused kernel keeps")
    if a.json:
        write_json(a.json, {"threads": a.threads, "isa": now, "dtype": a.dtype, "torch": tv, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
