"""``python -m hpr.data tokenizer|prepare|info``: train a byte-level BPE, prepare token shards (under
mpiexec the ranks share the tokenising; the shards are the same for any number of ranks), or describe
and check a prepared folder. A program: it starts hpr (hpr.init), sets the tokenizer library's thread
pool to this rank's share of the node's cores, and prints on rank 0.

  python -m hpr.data tokenizer --data notes/ --vocab-size 8192 --out tok.json
  mpiexec -n 4 python -m hpr.data prepare --data web.jsonl --tokenizer tok.json --out prepared/
  python -m hpr.data info prepared/
  zcat web.jsonl.gz | python -m hpr.data prepare --data - --tokenizer tok.json --out prepared/

Standard input under mpiexec needs a launcher that forwards it to rank 0 as fast as it comes: MPICH's
Hydra (5.0) gives up on a stream of more than a pipe's worth (~64 KB) with "process reading stdin too
slowly", so prepare a pipe in one process, or save the stream to a file first.
"""
import argparse
import os
import signal
import sys
import time

import hpr

from ..cpu import cpu_count
from ..errors import HprError
from . import documents, list_inputs, load_tokenizer, prepare, train_bpe, TokenShards
from .corpus import SUFFIXES
from .preparation import DEFAULT_SHARD_TOKENS
from .shards import SPLITS


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m hpr.data", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    def inputs(p):
        p.add_argument("--data", nargs="+", action="extend", metavar="PATH",
                       help="text files, folders (text files, .jsonl, .parquet inside), .jsonl/.ndjson or "
                            ".parquet files, or - for JSON Lines on standard input (default: the Python "
                            "standard library's *.py files)")
        p.add_argument("--text-field", default="text", help="JSON field / Parquet column with the text (default text)")
        p.add_argument("--val-permille", type=int, default=50,
                       help="validation share in thousandths, by file or record (default 50 = 5%%)")
        p.add_argument("--suffixes", nargs="+", default=list(SUFFIXES),
                       help=f"text files taken from folders (default {' '.join(SUFFIXES)})")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress display on rank 0 (default: when stderr is a terminal)")

    t = sub.add_parser("tokenizer", help="train a byte-level BPE (GPT-2's scheme) on the training split")
    inputs(t)
    t.add_argument("--vocab-size", type=int, default=8192, help="tokens, bytes and <|endoftext|> included (default 8192)")
    t.add_argument("--min-frequency", type=int, default=0, help="merge pairs seen at least this often (default 0)")
    t.add_argument("--out", required=True, help="the tokenizer.json to write")

    p = sub.add_parser("prepare", help="tokenise inputs into train/val token shards in a folder")
    inputs(p)
    p.add_argument("--tokenizer", required=True, help="a tokenizer.json (or a folder holding one), or bytes")
    p.add_argument("--out", required=True, help="the folder for the shards, tokenizer.json and meta.json")
    p.add_argument("--shard-tokens", type=int, default=DEFAULT_SHARD_TOKENS,
                   help=f"tokens per shard file (default {DEFAULT_SHARD_TOKENS})")

    i = sub.add_parser("info", help="describe a prepared folder and check every shard")
    i.add_argument("folder")
    return ap


def share_cores(comm, alone=False):
    """The tokenizer library's thread pool (rayon) gets this rank's share of the node's cores (alone: all
    of them, when rank 0 works alone, as in training a tokenizer: the other ranks wait in MPI's finalize
    without using a core), unless the user set its size; it is read when the pool starts, at the first
    encoding."""
    if "RAYON_NUM_THREADS" not in os.environ and "RAYON_RS_NUM_CPUS" not in os.environ:
        per_node = 1 if alone else comm.layout.per_node or comm.size
        os.environ["RAYON_NUM_THREADS"] = str(max(1, cpu_count() // max(1, per_node)))


def train_tokenizer(args, comm):
    """Rank 0 trains (the others have nothing to do and return at once)."""
    if comm.rank != 0:
        return 0
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    inputs = list_inputs(args.data, args.suffixes)
    n_docs, n_bytes = 0, 0

    def train_texts():
        nonlocal n_docs, n_bytes
        for text, is_val in documents(inputs, args.text_field, args.val_permille):
            if not is_val:
                n_docs += 1
                n_bytes += len(text)
                yield text

    t0 = time.perf_counter()
    tok = train_bpe(train_texts(), args.vocab_size, min_frequency=args.min_frequency, progress=progress)
    tok.save(args.out)
    print(f"trained a byte-level BPE of {tok.vocab_size} tokens on {n_docs} documents ({n_bytes / 1e6:.1f} M "
          f"characters, the training split of {inputs.description}) in {time.perf_counter() - t0:.1f} s\n"
          f"-> {os.path.abspath(args.out)} (sha256 {tok.hash[:16]}, <|endoftext|> = {tok.eot})")
    return 0


def prepare_shards(args, comm):
    t0 = time.perf_counter()
    r = prepare(args.data, args.tokenizer, args.out, comm=comm, text_field=args.text_field,
                val_permille=args.val_permille, shard_tokens=args.shard_tokens, suffixes=args.suffixes,
                progress=args.progress)
    if comm.rank != 0:
        return 0
    tok = r.meta["tokenizer"]
    if r.skipped:
        print(f"{r.path} is up to date: prepared from the same inputs (same files, sizes and times), tokenizer "
              f"sha256 {tok['hash'][:16]} and options; nothing to do (remove its meta.json to prepare it again)")
        return 0
    print(f"prepared {r.meta['inputs']['description']} with {args.tokenizer} (vocab {tok['vocab_size']}) in "
          f"{time.perf_counter() - t0:.1f} s on {comm.size} rank{'s' if comm.size > 1 else ''}")
    print(describe(r.meta) + f"\n-> {r.path}")
    return 0


def describe(meta):
    lines = []
    for s in SPLITS:
        st = meta["splits"][s]
        lines.append(f"  {s + ':':<6} {st['documents']:>9} documents {st['bytes'] / 1e6:>10.2f} MB "
                     f"{st['tokens']:>12} tokens  {st['bytes_per_token']:.3f} bytes/token  "
                     f"{len(st['shards'])} shard{'s' if len(st['shards']) != 1 else ''} of {meta['dtype']}")
    return "\n".join(lines)


def info(args, comm):
    if comm.rank != 0:
        return 0
    d = TokenShards(args.folder, verify=True)
    tok = d.meta["tokenizer"]
    print(f"{d.path}: tokenizer {tok['name']} (vocab {d.vocab_size}, end of text {d.eot}, sha256 "
          f"{d.hash[:16]}); every shard's size, header and checksum checked\n{describe(d.meta)}")
    load_tokenizer(d.tokenizer)  # its tokenizer.json parses and matches the hash
    return 0


def _stop(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through prepare's cleanup: its temporary files are removed


def main(argv=None):
    args = build_parser().parse_args(argv)
    comm = hpr.init()
    share_cores(comm, alone=args.command != "prepare")  # tokenizer and info: rank 0 alone
    signal.signal(signal.SIGTERM, _stop)
    try:
        return {"tokenizer": train_tokenizer, "prepare": prepare_shards, "info": info}[args.command](args, comm)
    except HprError as e:
        if comm.rank == 0:
            print(f"error: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
