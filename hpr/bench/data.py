"""``python -m hpr.bench data [--quick] [--vocab-size 8192] [--data PATH ...] [--json FILE]``: text to token
shards. Trains a byte-level BPE on the default corpus (the Python standard library's .py files, ~30 MB)
and prepares it (hpr.data.prepare: list, read, encode, split, write shards), and beside it encodes the
same documents, already in memory, with the tokenizers library's own ``encode_batch`` (the reference;
``encode_batch_fast``, which skips the offsets, too), in the same run. Prints seconds, MB/s and the
throughput ratio hpr / reference (target >= 0.8: hpr's reading, splitting and writing cost at most 20%),
and the time to train the tokenizer plus prepare (target <= 60 s on 2 cores). Exits 1, loudly, if the
shards differ from the library's encoding of the same documents or a document does not round-trip.
Usage: ``python -m hpr.bench.data --quick`` (every 8th file, a 2048-token BPE)."""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import tokenizers

from hpr.cpu import cpu_count, cpu_model
from hpr.data import TokenShards, documents, list_inputs, load_tokenizer, prepare, train_bpe

from . import write_json



def quick_corpus(inputs, folder, every=8):
    """Every `every`-th file of inputs linked into folder (same relative paths): a smaller corpus."""
    for f in inputs.files[::every]:
        dst = os.path.join(folder, f.rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.symlink(f.path, dst)
    return [folder]


def timed(fn):
    """(wall seconds, CPU seconds of this process's threads, fn())."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def reference_tokens(tok, texts, is_val, ids):
    """{split: tokens} as the library encodes the documents: eot, then the document, in order."""
    out = {"train": [], "val": []}
    for doc_ids, v in zip(ids, is_val):
        out["val" if v else "train"] += [tok.eot] + doc_ids
    return {s: np.array(t, np.int64) for s, t in out.items()}


def verify(out, tok, texts, is_val, ids):
    """The problems found: shards against the library's encoding, and every document's round trip."""
    problems = []
    d = TokenShards(out)
    want = reference_tokens(tok, texts, is_val, ids)
    for s in ("train", "val"):
        got = np.asarray(getattr(d, s)).astype(np.int64)
        if not np.array_equal(got, want[s]):
            n = min(got.size, want[s].size)
            first = int(np.argmax(got[:n] != want[s][:n])) if (got[:n] != want[s][:n]).any() else n
            problems.append(f"{s} shards differ from tokenizers' encode_batch: {got.size} vs {want[s].size} tokens, "
                            f"first difference at token {first}")
    back = tok.hf.decode_batch(ids, skip_special_tokens=False)
    bad = [i for i, (a, b) in enumerate(zip(back, texts)) if a != b]
    if bad:
        problems.append(f"{len(bad)} of {len(texts)} documents do not round-trip (decode(encode(x)) != x), "
                        f"first: document {bad[0]}")
    return problems


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m hpr.bench data", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", help="inputs as for python -m hpr.data (default: the standard library)")
    ap.add_argument("--vocab-size", type=int, default=None, help="BPE tokens (default 8192; 2048 with --quick)")
    ap.add_argument("--repeats", type=int, default=1, help="timed prepare/reference pairs (medians; default 1)")
    ap.add_argument("--quick", action="store_true", help="every 8th file of the corpus and a 2048-token BPE")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    vocab = args.vocab_size or (2048 if args.quick else 8192)
    load = os.getloadavg()[0]  # the machine may be shared: wall seconds mean little without it
    tmp = tempfile.mkdtemp(prefix="hpr-bench-data-")
    try:
        data = args.data  # None: the default corpus (only *.py, where a folder would also give .txt, .md ...)
        inputs = list_inputs(data)
        if args.quick:
            data = quick_corpus(inputs, os.path.join(tmp, "corpus"))
            inputs = list_inputs(data)
        docs = list(documents(inputs))
        texts, is_val = [t for t, _ in docs], [v for _, v in docs]
        n_bytes = sum(len(t.encode("utf-8")) for t in texts)
        t_train, c_train, tok = timed(lambda: train_bpe([t for t, v in docs if not v], vocab))
        tok_path = tok.save(os.path.join(tmp, "tok.json"))
        tok = load_tokenizer(tok_path)
        runs = {"prep": [], "ref": [], "fast": []}  # (wall, cpu) per run
        for k in range(args.repeats):  # alternate, so drift on a shared machine hits all three alike
            out = os.path.join(tmp, f"out{k}")
            runs["prep"].append(timed(lambda: prepare(data, tok_path, out, progress=False))[:2])
            *t, encs = timed(lambda: [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)])
            runs["ref"].append(t)
            runs["fast"].append(timed(lambda: [e.ids for e in tok.hf.encode_batch_fast(texts, add_special_tokens=False)])[:2])
        ids = encs
        problems = verify(os.path.join(tmp, "out0"), tok, texts, is_val, ids)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (prep, ref, fast), (cprep, cref, cfast) = ([statistics.median(r[i] for r in runs[k]) for k in ("prep", "ref", "fast")]
                                               for i in (0, 1))
    total = t_train + runs["prep"][0][0]
    total_cpu = c_train + runs["prep"][0][1]
    mb = n_bytes / 1e6
    res = {"documents": len(texts), "bytes": n_bytes, "vocab_size": tok.vocab_size, "cores": cpu_count(),
           "cpu": cpu_model(), "tokenizers": tokenizers.__version__, "quick": args.quick, "train_s": t_train,
           "train_cpu_s": c_train, "prepare_s": prep, "prepare_cpu_s": cprep, "encode_batch_s": ref,
           "encode_batch_cpu_s": cref, "encode_batch_fast_s": fast, "encode_batch_fast_cpu_s": cfast,
           "ratio_vs_encode_batch": ref / prep, "ratio_vs_encode_batch_fast": fast / prep,
           "train_plus_prepare_s": total, "train_plus_prepare_cpu_s": total_cpu, "load_average": load,
           "problems": problems}
    print(f"# hpr.bench data: {len(texts)} documents, {mb:.1f} MB ({inputs.description}); BPE of {tok.vocab_size} "
          f"tokens; {cpu_count()} cores ({res['cpu']}); tokenizers {tokenizers.__version__}; CPU s = this process's")
    print(f"{'tokenising':<44} {'seconds':>8} {'MB/s':>7} {'CPU s':>7} {'hpr / this':>11}")
    print(f"{'hpr prepare (read, encode, split, write)':<44} {prep:>8.2f} {mb / prep:>7.2f} {cprep:>7.2f} {'':>11}")
    print(f"{'tokenizers encode_batch (text in memory)':<44} {ref:>8.2f} {mb / ref:>7.2f} {cref:>7.2f} "
          f"{ref / prep:>10.2f}x   target >= 0.8x: {'met' if ref / prep >= 0.8 else 'MISSED'}")
    print(f"{'tokenizers encode_batch_fast (no offsets)':<44} {fast:>8.2f} {mb / fast:>7.2f} {cfast:>7.2f} "
          f"{fast / prep:>10.2f}x")
    print(f"train the BPE {t_train:.1f} s ({c_train:.1f} CPU s) + prepare {runs['prep'][0][0]:.1f} s "
          f"({runs['prep'][0][1]:.1f} CPU s) = {total:.1f} s ({total_cpu:.1f} CPU s; load average {load:.1f} "
          f"on {cpu_count()} cores at the start)   target <= 60 s on 2 cores: {'met' if total <= 60 else 'MISSED'}"
          f"{' (quick: a part of the corpus)' if args.quick else ''}")
    if args.json:
        write_json(args.json, res)
    if problems:
        print("FAILED: the prepared shards are not the library's encoding of the documents:\n  " + "\n  ".join(problems),
              file=sys.stderr)
        return 1
    print(f"check: shards equal tokenizers' encode_batch of all {len(texts)} documents, and every one round-trips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
