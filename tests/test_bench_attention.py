"""python -m hpr.bench attention: registered, writes its rows, and refuses to time a wrong kernel (its
y and dL/dqkv are checked against torch's SDPA on the same inputs before timing)."""
import json
import types

import pytest

import hpr.bench.attention as A
from hpr.bench import BENCHES, ResultsDisagree


def test_registered():
    assert BENCHES["attention"][0] == "hpr.bench.attention"


def test_rows_and_json(tmp_path):
    out = tmp_path / "att.json"
    assert A.main(["--T", "64,100", "--D", "16", "--repeats", "1", "--tokens", "256", "--no-torch",
                   "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert [(r["T"], r["D"], r["B"]) for r in d["rows"]] == [(64, 16, 4), (100, 16, 2)]
    assert all(r["hpr_ms"] > 0 and r["hpr_bytes"] < r["probabilities_bytes"] for r in d["rows"])


def test_a_wrong_kernel_is_refused(monkeypatch):
    pytest.importorskip("torch")  # the reference; the test extra installs it
    real = A.K

    def forward_off_by_a_little(qkv, b, t, h, saved, y):
        real.attention_forward(qkv, b, t, h, saved, y)
        y[0, 0] += 0.01

    assert "ratio" in A.measure(64, 16, 2, 256, 1, 1)  # the right kernel agrees with torch
    monkeypatch.setattr(A, "K", types.SimpleNamespace(
        attention_forward=forward_off_by_a_little, attention_backward=real.attention_backward,
        attention_saved_shape=real.attention_saved_shape, attention_scratch_bytes=real.attention_scratch_bytes))
    with pytest.raises(ResultsDisagree, match="attention T=64 D=16"):
        A.measure(64, 16, 2, 256, 1, 1)
