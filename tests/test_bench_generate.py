"""``python -m hpr.bench generate``: registered in hpr.bench's table, and its --json is exactly the rows
the issue names, with transformers_tok_s null where that reference is not run; the float64 check of the
cache against recomputation passes and the cached tokens equal recomputation's (exit 0)."""
import json

from hpr.bench import BENCHES
from hpr.bench.__main__ import main

KEYS = {"preset", "context", "new_tokens", "hpr_tok_s", "recompute_tok_s", "transformers_tok_s"}


def test_generate_is_a_benchmark_and_writes_the_rows(tmp_path, capsys):
    assert BENCHES["generate"][0] == "hpr.bench.generate"
    out = tmp_path / "g.json"
    assert main(["generate", "--quick", "--no-transformers", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "same greedy tokens" in text and "FAILED" not in text
    d = json.loads(out.read_text())
    assert list(d) == ["rows"] and len(d["rows"]) == 1
    row = d["rows"][0]
    assert set(row) == KEYS and row["transformers_tok_s"] is None
    assert (row["preset"], row["context"], row["new_tokens"]) == ("S", 128, 24)
    assert row["hpr_tok_s"] > 0 and row["recompute_tok_s"] > 0
