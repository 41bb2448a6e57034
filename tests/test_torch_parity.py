"""hpr's GPT, AdamW, cosine schedule and gradient clipping against PyTorch, step for step.

The torch model is hpr.bench.torch_reference's (same architecture: pre-LN blocks, tanh GELU, causal
SDPA, tied head); hpr's initial parameters are copied into it, both see the same batches, and both
are trained the way hpr.train.run trains (zero_grad, forward, backward, global-norm clip, AdamW step
with the scheduled lr). Skipped where torch is not installed (torch is never a dependency of hpr).

Tolerances are per tensor and scale-aware: |hpr - torch| <= rtol * (|torch| + max|torch|), so an
element whose true value is ~0 (e.g. the key bias's gradient, which softmax makes exactly zero in
exact arithmetic) is judged against its tensor's scale rather than its own round-off.

Run with -s to see the per-step norms and the observed relative differences."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hpr.bench.torch_reference import build_model  # noqa: E402
from hpr.model.gpt import GPT, GPTConfig  # noqa: E402
from hpr.optim import AdamW, CosineSchedule, clip_scale, grad_norm_sq  # noqa: E402

B, T = 4, 16
SEED = 3
LR, WARMUP, MIN_RATIO, WD = 3e-3, 2, 0.1, 0.1
# hpr.train's default. The tiny model's global gradient norm runs ~0.95-1.45 over these 10 steps, so
# 1.0 clips on most steps but not all: both branches of clip_scale / clip_grad_norm_ run (asserted below)
MAX_NORM = 1.6  # clips the first steps only (norms 2.3 falling to 1.4 with this seed)


def torch_name(name):
    """hpr layout name -> (torch parameter name, transpose?)."""
    if name in ("wte", "wpe"):
        return name + ".weight", False
    leaf = {"w": "weight", "b": "bias"}
    parts = name.split(".")
    if parts[0] == "ln_f":
        return "ln_f." + leaf[parts[1]], False
    i = int(parts[0][1:])
    if parts[1] in ("ln1", "ln2"):
        return f"blocks.{i}.{parts[1]}.{leaf[parts[2]]}", False
    mod = {("attn", "qkv"): "qkv", ("attn", "proj"): "proj", ("mlp", "fc"): "fc1", ("mlp", "proj"): "fc2"}
    tmod = mod[(parts[1], parts[2])]
    return f"blocks.{i}.{tmod}.{leaf[parts[3]]}", parts[3] == "w"  # Linear W is (in, out) in hpr


def build_pair(dtype):
    cfg = GPTConfig.preset("tiny", dtype=dtype)
    model = GPT(cfg, seed=SEED)
    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    tm = build_model(cfg).to(tdtype)
    tparams = dict(tm.named_parameters())
    mapping = {p.name: torch_name(p.name) for p in model.layout.entries}
    assert sorted(tn for tn, _ in mapping.values()) == sorted(tparams), "name mapping is not a bijection"
    with torch.no_grad():
        for name, (tn, tr) in mapping.items():
            d = model.layout[name].data
            src = torch.from_numpy(np.ascontiguousarray(d.T if tr else d).copy())
            assert tparams[tn].shape == src.shape, (name, tn)
            tparams[tn].copy_(src)
    return model, tm, tparams, mapping


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        tok = rng.integers(0, 256, (B, T + 1))
        out.append((np.ascontiguousarray(tok[:, :-1]), np.ascontiguousarray(tok[:, 1:])))
    return out


def rel(a, b):
    """(normwise max|a-b| / max|b|, elementwise max |a-b| / |b| over |b| > 1e-3 max|b|)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.abs(b).max()
    d = np.abs(a - b)
    big = np.abs(b) > 1e-3 * scale
    return float(d.max() / scale), float((d[big] / np.abs(b[big])).max())


def assert_close(a, b, rtol, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=what)


def compare_tensors(model, tparams, mapping, attr, rtol, skip_key_bias=False):
    """Compare every hpr param (attr='data') or gradient (attr='grad') with torch's; returns the worst
    (normwise rel, elementwise rel, tensor name). skip_key_bias: leave the key third of each qkv bias
    out (see key_bias_slice)."""
    worst = [0.0, 0.0, None]
    for name, (tn, tr) in mapping.items():
        h = getattr(model.layout[name], attr)
        h = h.T if tr else h
        tp = tparams[tn]
        t = (tp.grad if attr == "grad" else tp).detach().numpy()
        if skip_key_bias and name.endswith(".attn.qkv.b"):
            keep = np.ones(h.shape, bool)
            keep[key_bias_slice(model)] = False
            h, t = h[keep], t[keep]
        nw, ew = rel(h, t)
        if nw > worst[0]:
            worst[0], worst[2] = nw, name
        worst[1] = max(worst[1], ew)
        assert_close(h, t, rtol, f"{attr} of {name} ({tn})")
    return worst


def key_bias_slice(model):
    """The key part of a qkv bias ([q | k | v]). Its gradient is exactly zero in exact arithmetic
    (q.(k_j + b) = q.k_j + q.b shifts every score of a row equally, and softmax ignores that), so both
    frameworks hold pure round-off there (~1e-20 in float64, ~1e-11 in float32) and AdamW turns it
    into updates of about lr * g / (|g| + eps): agreeing in float64 (g << eps), but of random sign and
    up to ~1e-3 lr in float32. Compared as 'stays ~0' rather than element for element in float32."""
    c = model.config.d_model
    return slice(c, 2 * c)


def torch_adamw(tm):
    decay = [m.weight for m in tm.modules() if isinstance(m, torch.nn.Linear)]
    ids = {id(p) for p in decay}
    rest = [p for p in tm.parameters() if id(p) not in ids]
    assert len(decay) == 4 * 2 and all(p.dim() == 2 for p in decay)
    groups = [{"params": decay, "weight_decay": WD}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.999), eps=1e-8)


def train_both(dtype, steps, max_norm):
    model, tm, tparams, mapping = build_pair(dtype)
    # hpr's decay flags are the same set torch decays: the 2-D Linear weights
    assert {n for n, (_, tr) in mapping.items() if tr} == {p.name for p in model.layout.entries if p.decay}
    opt = AdamW(model.layout, model.params, model.grads, weight_decay=WD)
    sched = CosineSchedule(lr=LR, total=steps, warmup=WARMUP, min_ratio=MIN_RATIO)
    topt = torch_adamw(tm)
    rec = []
    for step, (x, y) in enumerate(batches(steps), start=1):
        model.zero_grad()
        loss = model.forward(x, y)
        model.backward()
        norm = math.sqrt(grad_norm_sq(model.grads))
        lr = sched(step)
        gscale = clip_scale(norm, max_norm)
        opt.step(lr, gscale)

        topt.zero_grad(set_to_none=True)
        tloss = tm(torch.from_numpy(x), torch.from_numpy(y))
        tloss.backward()
        tnorm = float(torch.nn.utils.clip_grad_norm_(tm.parameters(), max_norm))
        for g in topt.param_groups:
            g["lr"] = lr
        topt.step()
        rec.append(dict(step=step, loss=loss, tloss=float(tloss.detach()), norm=norm, tnorm=tnorm, lr=lr,
                        clipped=gscale < 1.0))
        print(f"{dtype} step {step:2d}: loss {loss:.15f} torch {float(tloss.detach()):.15f}  norm {norm:.6f} "
              f"(torch {tnorm:.6f})  lr {lr:.3e}  {'clipped x%.6f' % gscale if gscale < 1 else 'not clipped'}")
    return model, tm, tparams, mapping, rec


def test_forward_loss_and_grads_float64():
    model, tm, tparams, mapping = build_pair("float64")
    x, y = batches(1, seed=7)[0]
    model.zero_grad()
    loss = model.forward(x, y)
    model.backward()
    tloss = tm(torch.from_numpy(x), torch.from_numpy(y))
    tloss.backward()
    tloss = tloss.detach()
    d = abs(loss - float(tloss)) / abs(float(tloss))
    print(f"\nfloat64 forward: hpr {loss!r} torch {float(tloss)!r} rel {d:.2e}")
    assert loss == pytest.approx(float(tloss), rel=1e-12, abs=0)
    nw, ew, name = compare_tensors(model, tparams, mapping, "grad", 1e-10)
    print(f"float64 grads: max normwise rel {nw:.2e} ({name}), max elementwise rel {ew:.2e}")


def test_training_10_steps_float64():
    model, tm, tparams, mapping, rec = train_both("float64", 10, MAX_NORM)
    clipped = [r["clipped"] for r in rec]
    assert any(clipped) and not all(clipped), f"max_norm {MAX_NORM} should clip on some steps only: {clipped}"
    worst_loss = max(abs(r["loss"] - r["tloss"]) / abs(r["tloss"]) for r in rec)
    worst_norm = max(abs(r["norm"] - r["tnorm"]) / r["tnorm"] for r in rec)
    for r in rec:
        assert r["loss"] == pytest.approx(r["tloss"], rel=1e-9, abs=0), r
        assert r["norm"] == pytest.approx(r["tnorm"], rel=1e-9, abs=0), r
    nw, ew, name = compare_tensors(model, tparams, mapping, "data", 1e-8)
    print(f"float64 10 steps: max loss rel {worst_loss:.2e}, max grad-norm rel {worst_norm:.2e}, "
          f"final params max normwise rel {nw:.2e} ({name}), max elementwise rel {ew:.2e}; "
          f"clipped on steps {[r['step'] for r in rec if r['clipped']]}")


def test_training_5_steps_float32():
    model, tm, tparams, mapping, rec = train_both("float32", 5, MAX_NORM)
    worst_loss = max(abs(r["loss"] - r["tloss"]) / abs(r["tloss"]) for r in rec)
    for r in rec:
        assert r["loss"] == pytest.approx(r["tloss"], rel=1e-4, abs=0), r
        assert r["norm"] == pytest.approx(r["tnorm"], rel=1e-4, abs=0), r
    nw, ew, name = compare_tensors(model, tparams, mapping, "data", 1e-3, skip_key_bias=True)
    lr_sum = sum(r["lr"] for r in rec)
    kb = key_bias_slice(model)
    for i in range(model.config.n_layers):
        h = model.layout[f"h{i}.attn.qkv.b"].data[kb]
        t = tparams[f"blocks.{i}.qkv.bias"].detach().numpy()[kb]
        # a null direction of the loss: each AdamW step moves it by at most a few lr, on both sides
        assert np.abs(h).max() < 3 * lr_sum and np.abs(t).max() < 3 * lr_sum, (i, h, t)
    print(f"float32 5 steps: max loss rel {worst_loss:.2e}, final params max normwise rel {nw:.2e} ({name}), "
          f"max elementwise rel {ew:.2e}")


@pytest.mark.parametrize("norm", [0.5, 1.0 - 1e-7, 1.0, 1.0 + 1e-7, 2.0])
def test_clip_scale_matches_torch(norm):
    """clip_scale against clip_grad_norm_'s coefficient: max_norm / (norm + 1e-6), clamped to 1."""
    g = torch.zeros(4, dtype=torch.float64)
    g[0] = norm
    p = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    p.grad = g.clone()
    torch.nn.utils.clip_grad_norm_([p], 1.0)
    tcoef = float(p.grad[0]) / norm
    assert clip_scale(norm, 1.0) == pytest.approx(tcoef, rel=1e-15, abs=0)
