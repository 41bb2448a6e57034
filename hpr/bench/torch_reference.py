"""hpr's GPT and training recipe written again in PyTorch eager: a side-by-side reference for
``python -m hpr.bench train``, used only when torch happens to be installed. torch is never a dependency
of hpr (only of its `test` extra, for the references CI compares against): it is imported inside the
functions, so importing this module needs only the standard library, and ``available()`` says whether
the reference can run.

    python -m hpr.bench.torch_reference --preset S --threads 1 --batch 16 --steps 10

Dimensions: B batch, T context, C d_model, V vocab, L layers, H heads.

``python -m hpr.bench dp`` wraps the same model (build_model) and optimizer (adamw) in DDP.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import math
import statistics
import time

PRESETS = {
    "S": dict(vocab_size=256, context=128, d_model=128, n_layers=4, n_heads=4),
    "M": dict(vocab_size=256, context=256, d_model=384, n_layers=6, n_heads=6),
}


def _dims(cfg):
    """(V, T, C, L, H) from a dict or from any object with these attributes."""
    get = cfg.get if isinstance(cfg, dict) else (lambda k: getattr(cfg, k))
    return tuple(int(get(k)) for k in ("vocab_size", "context", "d_model", "n_layers", "n_heads"))


def available():
    """torch's version string if torch is installed, else None. Found without importing torch: an
    imported torch starts OpenMP threads that spin beside the benchmark's own work."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def model_flops_per_token(cfg):
    """Training FLOPs per token, PaLM's convention (Chowdhery et al. 2022, appendix B):

        6 N + 12 L T C,    N = 12 L C^2 + V C

    N counts every matmul weight: per block qkv 3C^2, attention proj C^2, fc1 4C^2, fc2 4C^2, plus the
    tied head V C (wte used as the output matrix). Embedding lookups, biases, LayerNorm and GELU are
    left out. 12 L T C is attention's QK^T and AV (2 matmuls x 2 FLOPs x 3 for forward + backward)
    over the full T x T square, causal masking not discounted."""
    V, T, C, L, _ = _dims(cfg)
    n_matmul = 12 * L * C * C + V * C
    return float(6 * n_matmul + 12 * L * T * C)


def build_model(cfg):
    """The GPT as a torch.nn.Module, initialised as hpr initialises its own."""
    import torch  # lazy: optional and heavy (its OpenMP threads spin once imported)
    import torch.nn as nn  # lazy: optional and heavy
    import torch.nn.functional as F  # lazy: optional and heavy

    V, T, C, L, H = _dims(cfg)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(C, eps=1e-5), nn.LayerNorm(C, eps=1e-5)
            self.qkv, self.proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
            self.fc1, self.fc2 = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

        def forward(self, x):  # (B, T, C)
            B, T_, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)  # each (B, T, C)
            q, k, v = (t.view(B, T_, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, C/H)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, C/H)
            x = x + self.proj(a.transpose(1, 2).reshape(B, T_, C))
            return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
            self.blocks = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C, eps=1e-5)
            std = 0.02 * math.sqrt(768 / C)  # hpr's init: GPT-2's 0.02 at width 768, scaled by 1/sqrt(C)
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(m.weight, 0.0, std)
                if isinstance(m, nn.Linear):
                    nn.init.zeros_(m.bias)
            for b in self.blocks:  # residual output projections: std shrunk by the depth of the sum
                nn.init.normal_(b.proj.weight, 0.0, std / math.sqrt(2 * L))
                nn.init.normal_(b.fc2.weight, 0.0, std / math.sqrt(2 * L))

        def forward(self, idx, targets):  # idx, targets (B, T) int64
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))  # (B, T, C)
            for b in self.blocks:
                x = b(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)  # (B, T, V), tied head, no bias
            return F.cross_entropy(logits.view(-1, V), targets.reshape(-1))

    return GPT()


def adamw(model, lr):
    """AdamW with weight decay on the 2-D Linear weights only (not biases, LayerNorm or embeddings)."""
    import torch  # lazy: optional and heavy (its OpenMP threads spin once imported)

    decay = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


def train_step_times(cfg, batch, threads, steps, warmup, seed=0, lr=1e-3, compile=False):
    """Time `steps` full float32 optimizer steps after `warmup` untimed ones, on `threads` torch threads
    (restored afterwards); wall seconds (step_s) and the process's CPU seconds (cpu_s, every thread).
    compile=True runs the model through torch.compile (inductor; the warm-up steps compile it). Each step draws a new (batch, T+1) block of uniform random tokens from a
    generator seeded with `seed`: inputs are its first T columns, targets the next-token shift.
    loss_first is the first step's loss (warmup included, ~ln V), loss_last the last timed step's."""
    import torch  # lazy: optional and heavy (its OpenMP threads spin once imported)

    V, T, _, _, _ = _dims(cfg)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(seed)
        model = build_model(cfg).float()
        opt = adamw(model, lr)
        run = torch.compile(model) if compile else model
        gen = torch.Generator().manual_seed(seed)
        times, cpus, losses = [], [], []
        for i in range(warmup + steps):
            tok = torch.randint(0, V, (batch, T + 1), generator=gen)  # (B, T+1)
            t0, c0 = time.perf_counter(), time.process_time()
            opt.zero_grad(set_to_none=True)
            loss = run(tok[:, :-1], tok[:, 1:])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            losses.append(loss.item())
            if i >= warmup:
                times.append(dt)
                cpus.append(dc)
    finally:
        torch.set_num_threads(old_threads)
    med = statistics.median(times)
    return {"torch": torch.__version__, "threads": threads, "step_s": times, "cpu_s": cpus, "median_s": med,
            "tokens_per_s": batch * T / med, "loss_first": losses[0], "loss_last": losses[-1],
            "n_params": sum(p.numel() for p in model.parameters())}


def matmul_flops(threads, n=2048, repeats=5):
    """torch's float32 FLOP/s on an n x n @ n x n matmul (median of `repeats`, after one warm-up)."""
    import torch  # lazy: optional and heavy (its OpenMP threads spin once imported)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            ts.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(old_threads)
    return 2.0 * n ** 3 / statistics.median(ts)


def sdpa_backend(cfg, batch):
    """Which kernel torch's dispatcher picks for this model's attention call (e.g. FLASH_ATTENTION,
    torch's fused CPU kernel, or MATH, the unfused composite)."""
    import torch  # lazy: optional and heavy (its OpenMP threads spin once imported)
    from torch.nn.attention import SDPBackend  # lazy: optional and heavy

    _, T, C, _, H = _dims(cfg)
    q = torch.randn(batch, H, T, C // H, requires_grad=True)  # (B, H, T, C/H)
    return SDPBackend(torch._fused_sdp_choice(q, q, q, is_causal=True)).name


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench.torch_reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="S")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="FILE", help="write the step times as JSON (hpr.bench train reads it)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    args = ap.parse_args(argv)
    if available() is None:
        print("torch is not installed: the PyTorch reference cannot run (pip install torch)")
        return 1
    cfg = PRESETS[args.preset]
    r = train_step_times(cfg, args.batch, args.threads, args.steps, args.warmup, seed=args.seed, compile=args.compile)
    peak = matmul_flops(args.threads)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(r, matmul_flops=peak), f)
    achieved = model_flops_per_token(cfg) * r["tokens_per_s"]
    print(f"torch {r['torch']}{' compiled' if args.compile else ''}  preset {args.preset} {cfg}  batch {args.batch}  threads {r['threads']}")
    print(f"params {r['n_params']:,}  attention kernel {sdpa_backend(cfg, args.batch)}  "
          f"loss {r['loss_first']:.4f} -> {r['loss_last']:.4f}")
    print(f"step   median {r['median_s'] * 1e3:.1f} ms  (min {min(r['step_s']) * 1e3:.1f}, "
          f"max {max(r['step_s']) * 1e3:.1f}, {args.steps} steps after {args.warmup} warm-up)")
    print(f"tokens/s {r['tokens_per_s']:,.0f}  model {achieved / 1e9:.2f} GFLOP/s  "
          f"(6N + 12LTC = {model_flops_per_token(cfg) / 1e6:.2f} MFLOP/token)")
    print(f"reference: torch fp32 2048^3 matmul {peak / 1e9:.2f} GFLOP/s  ->  MFU {achieved / peak:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
