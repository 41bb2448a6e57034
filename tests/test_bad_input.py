"""The bad-input catalogue (issue 8): every user-facing entry point called with wrong values.

Each case is one call into hpr (trainer and classifier flags, GPTConfig, data paths, process-grid
layouts, state vectors, circuits, QASM files and the QASM command, checkpoint folders, collective
arguments, environment variables), the HprError subclass it must raise (exactly that class), and
regular expressions its message must match: the wrong value and a hint of what to do. Around every
call the test lists the folders the call could write to (checkpoint folder, output folder, corpus
cache) and requires them unchanged afterwards, and no temporary (half-written) file anywhere in the
test's folder. At the end, a few representative cases run under mpiexec: every rank reports the
error and the job ends non-zero, without a hang.

Cases marked xfail(strict) are entry points whose fix lies in a file owned elsewhere; the reason
names the fix, and the case turns into a failure (XPASS) once it is made, so the mark comes off."""
import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import hpr
import hpr.data
import hpr.model
import hpr.quantum
import hpr.quantum.qasm
from hpr import CheckpointError, ConfigError, DataError, HprError
from hpr.quantum.qasm import QasmError

from launch import mpi_job, script

HERE = Path(__file__).resolve().parent
QASM_DIR = HERE / "data"


# -- the folders a case may not touch (the corpus: conftest.py) ---------------------------------------
def _train_flags(corpus, ckpt, out):
    return ["--data", str(corpus), "--preset", "tiny", "--steps", "2", "--batch", "2", "--eval-every", "0",
            "--eval-batches", "1", "--sample-tokens", "0", "--threads", "1", "--ckpt-dir", str(ckpt),
            "--log-json", str(out / "log.json")]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """(checkpoint folder, corpus cache folder) of 2 steps of the tiny model, trained in this process."""
    from hpr.train import build_parser, run

    base = tmp_path_factory.mktemp("trained")
    ckpt, cache, out = base / "ckpt", base / "cache", base / "out"
    out.mkdir()
    old = os.environ.get("HPR_CACHE_DIR")
    os.environ["HPR_CACHE_DIR"] = str(cache)
    try:
        assert run(build_parser().parse_args(_train_flags(corpus, ckpt, out))) == 0
    finally:
        if old is None:
            del os.environ["HPR_CACHE_DIR"]
        else:
            os.environ["HPR_CACHE_DIR"] = old
    assert (ckpt / "step-00000002" / "meta.json").exists() and any(cache.iterdir())
    return ckpt, cache


@pytest.fixture(scope="module", autouse=True)
def keep_thread_count():
    """The trainer cases run with --threads 1 in this process; give later test modules the count back."""
    from hpr import cpu

    before = cpu.num_threads()
    yield
    cpu.set_num_threads(before)


class Ctx:
    """What a case's call gets: tmp (its own folder), data (a good corpus), ckpt (a checkpoint folder,
    absent unless a case's setup puts one there), out (an empty output folder), cache (HPR_CACHE_DIR,
    empty), monkeypatch, and notes for checks after the call."""

    def __init__(self, tmp, corpus, trained, monkeypatch):
        self.tmp, self.data, self._trained, self.monkeypatch = tmp, corpus, trained, monkeypatch
        self.ckpt, self.out, self.cache = tmp / "ckpt", tmp / "out", tmp / "cache"
        self.out.mkdir()
        self.cache.mkdir()
        monkeypatch.setenv("HPR_CACHE_DIR", str(self.cache))
        self.notes = {}

    def use_trained(self):
        """A copy of the trained checkpoint in ckpt and its corpus cache in cache (so a resume that
        fails reads a current cache and must write nothing at all)."""
        src_ckpt, src_cache = self._trained
        shutil.copytree(src_ckpt, self.ckpt)
        for f in src_cache.iterdir():
            shutil.copy2(f, self.cache / f.name)

    def file(self, name, data):
        p = self.tmp / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return p


def snapshot(folder):
    """{relative path: (size, sha256)} of every file under folder; None when it does not exist."""
    if not folder.exists():
        return None
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(folder))] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        elif p.is_dir():
            out[str(p.relative_to(folder)) + "/"] = None
    return out


def half_written(tmp):
    """Temporary files of an interrupted write (checkpoint .tmp-*, cache *.tmp.*, --out *.tmp)."""
    return [str(p) for p in tmp.rglob("*") if ".tmp" in p.name]


# -- the calls ---------------------------------------------------------------------------------------
def train(*flags, ckpt=True):
    """hpr.train's command line on the good corpus (later flags override the defaults)."""
    def call(ctx):
        from hpr.train import build_parser, run

        argv = _train_flags(ctx.data, ctx.ckpt, ctx.out)
        if not ckpt:
            i = argv.index("--ckpt-dir")
            del argv[i:i + 2]
        argv += [str(f).format(tmp=ctx.tmp) for f in flags]
        return run(build_parser().parse_args(argv))
    return call


def classify(*flags):
    def call(ctx):
        from hpr.classify import build_parser, run

        argv = ["--epochs", "1", "--steps-per-epoch", "1", "--batch", "2", "--threads", "1",
                "--log-json", str(ctx.out / "log.json"), *map(str, flags)]
        return run(build_parser().parse_args(argv))
    return call


class _World:
    """A stand-in for a world Communicator of `size` ranks: ProcessGrid checks the layout against
    the size before it makes a single sub-communicator."""

    def __init__(self, size):
        self.size, self.rank = size, 0


def grid(size, **kw):
    def call(ctx):
        from hpr.parallel import ProcessGrid

        return ProcessGrid(_World(size), **kw)
    return call


def qasm_text(text):
    def call(ctx):
        from hpr.quantum import qasm

        return qasm.load(ctx.file("circuit.qasm", text))
    return call


def qasm_cli(*argv):
    def call(ctx):
        import argparse

        from hpr.quantum.__main__ import cmd_run

        ap = argparse.ArgumentParser()
        ap.add_argument("circuit")
        ap.add_argument("--out")
        ap.add_argument("--dtype", default="complex128")
        return cmd_run(ap.parse_args([str(a).format(tmp=ctx.tmp, out=ctx.out, data=QASM_DIR) for a in argv]))
    return call


def sv(fn, n=3, batch=2):
    def call(ctx):
        from hpr.quantum import StateVector

        return fn(StateVector(n, batch=batch), ctx)
    return call


def comm(fn):
    def call(ctx):
        return fn(hpr.init())
    return call


def env_comm(**env):
    """A new Communicator over MPI.COMM_SELF with the settings read from the HPR_* variables under env
    (as hpr.init reads them: hpr.config.from_env)."""
    def call(ctx):
        from mpi4py import MPI

        from hpr.comm import Communicator

        for k, v in env.items():
            ctx.monkeypatch.setenv(k, v)
        c = Communicator(MPI.COMM_SELF, config=hpr.config.from_env().comm)
        c.free()
    return call


def in_subprocess(body, **env):
    """Run body in a fresh Python (for settings read once per process); an HprError there is raised
    here again, as the same class with the same message."""
    def call(ctx):
        script = ctx.file("job.py", textwrap.dedent("""
            import json, sys
            import hpr
            try:
            %s
            except hpr.HprError as e:
                print("HPRERR" + json.dumps([type(e).__name__, str(e)]))
                sys.exit(0)
            print("HPRERR" + json.dumps(None))
            """) % textwrap.indent(textwrap.dedent(body), "    "))
        e = dict(os.environ, **env)
        p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=e,
                           cwd=ctx.tmp)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("HPRERR")]
        assert p.returncode == 0 and lines, p.stdout + p.stderr
        import json

        got = json.loads(lines[-1][6:])
        if got is not None:
            raise getattr(hpr, got[0])(got[1])
    return call


def corpus_load(path_fn, **kw):
    def call(ctx):
        from hpr.data import Corpus

        return Corpus.load(path_fn(ctx), **kw)
    return call


def labels_load(path_fn, **kw):
    def call(ctx):
        from hpr.data import LabeledWindows

        return LabeledWindows.load(path_fn(ctx), **kw)
    return call


def make_fifo(ctx):
    p = ctx.tmp / "pipe.txt"
    os.mkfifo(p)
    return p


def unreadable(ctx):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    p = ctx.file("secret.txt", "x" * 1000)
    p.chmod(0)
    return p


def too_small_then_check(ctx):
    from hpr.data import Corpus

    c = Corpus.load(ctx.file("small.txt", "0123456789" * 10), val_permille=100)  # 90 + 10 bytes
    c.check_context(16)


def state_before_alloc(ctx):
    """A state too large for the memory the machine says it has: refused before a byte is allocated."""
    from hpr.quantum import StateVector
    from hpr.quantum import statevec

    ctx.monkeypatch.setattr(statevec, "_memory_available", lambda: 64 << 20)
    tracemalloc.start()
    try:
        StateVector(22, batch=2)  # 2 x 2**22 x 16 B = 128 MiB
    finally:
        ctx.notes["peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


def non_unitary(ctx):
    from hpr.quantum import StateVector

    ctx.monkeypatch.setenv("HPR_CHECK", "1")
    before = hpr.config.current()
    hpr.config.set_current(hpr.config.from_env())  # settings are read once (hpr.init does this)
    try:
        StateVector(2).apply_matrix(np.array([[1, 1], [0, 1]]), [0])
    finally:
        hpr.config.set_current(before)


def circuit(fn):
    def call(ctx):
        from hpr.quantum.circuit import Circuit

        return fn(Circuit)
    return call


def dsv(n, make_comm):
    def call(ctx):
        from hpr.quantum import DistributedStateVector

        return DistributedStateVector(n, make_comm())
    return call


def ckpt_damaged(damage):
    """(setup, call): a copy of the trained checkpoint, damaged; then hpr.checkpoint.validate on it."""
    def setup(ctx):
        ctx.use_trained()
        damage(ctx.ckpt / "step-00000002")

    def call(ctx):
        from hpr import checkpoint

        return checkpoint.validate(str(ctx.ckpt / "step-00000002"))
    return dict(setup=setup, call=call)


def _flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def tokens_outside_vocab(ctx):
    from hpr.model import GPT, GPTConfig

    m = GPT(GPTConfig.preset("tiny"))
    x = np.array([[1, 2, 300]], np.int64)
    m.forward(x, x)


# -- the table ---------------------------------------------------------------------------------------
HINT_CKPT = r"older checkpoint|delete|another --ckpt-dir|remove"


@dataclasses.dataclass
class Case:
    id: str
    call: Callable
    exc: type
    must: tuple               # regular expressions the message must match (the value, the hint)
    setup: Callable = None    # runs before the folders are listed
    watch: tuple = ("ckpt", "out", "cache")
    after: Callable = None    # a check on ctx.notes after the call
    xfail: str = None         # "needs fix: ..." for entry points in files owned elsewhere


CASES = [
    # trainer flags (hpr.train): rejected by check_args / GPTConfig / ProcessGrid before any file
    Case("train-preset-unknown", train("--preset", "XL"), ConfigError, (r"--preset 'XL'", r"choose one of tiny, S, M")),
    Case("train-steps-zero", train("--steps", 0), ConfigError, (r"--steps must be at least 1", r"got 0\b")),
    Case("train-steps-negative", train("--steps", -5), ConfigError, (r"--steps must be at least 1", r"got -5")),
    Case("train-batch-zero", train("--batch", 0), ConfigError, (r"--batch must be at least 1", r"got 0\b")),
    Case("train-lr-zero", train("--lr", 0), ConfigError, (r"--lr must be a positive number", r"got 0\.0")),
    Case("train-lr-nan", train("--lr", "nan"), ConfigError, (r"--lr must be a positive number", r"got nan")),
    Case("train-dtype-float16", train("--dtype", "float16"), ConfigError,
         (r"--dtype 'float16'", r"use one of float32, float64")),
    Case("train-warmup-negative", train("--warmup", -1), ConfigError, (r"--warmup must be >= 0", r"got -1")),
    Case("train-beta2-one", train("--beta2", 1.0), ConfigError, (r"--beta2 must be in \[0, 1\)", r"got 1\.0")),
    Case("train-threads-zero", train("--threads", 0), ConfigError, (r"--threads must be at least 1", r"got 0\b")),
    Case("train-tp-not-dividing-world", train("--tp", 2), ConfigError,
         (r"tp=2", r"does not divide the job's 1 ranks", r"Layouts that work .*--dp 1 --tp 1 --pp 1")),
    Case("train-dp-more-than-world", train("--dp", 2), ConfigError,
         (r"dp x tp x pp = 2 x 1 x 1 = 2, but the job has 1 ranks", r"--dp 1 --tp 1 --pp 1")),
    Case("train-pp-more-than-world", train("--pp", 3), ConfigError,
         (r"pp=3", r"does not divide the job's 1 ranks", r"Layouts that work")),
    Case("train-batch-vs-micro-batches", train("--batch", 3, "--micro-batches", 2), ConfigError,
         (r"--batch 3 does not split evenly over 1 data-parallel rank\(s\) x 2 micro-batch", r"use a multiple of 2")),
    Case("train-micro-batches-zero", train("--micro-batches", 0), ConfigError,
         (r"--micro-batches", r"got 0\b|--micro-batches 0\b", r"at least 1|>= 1")),
    Case("train-ckpt-every-negative", train("--ckpt-every", -1), ConfigError,
         (r"--ckpt-every", r"got -1|--ckpt-every -1", r">= 0")),
    Case("train-grad-comm-dtype", train("--grad-comm-dtype", "int8"), ConfigError,
         (r"--grad-comm-dtype 'int8'", r"use one of float32, bfloat16, float16")),
    Case("train-bucket-mb-zero", train("--bucket-mb", 0), ConfigError,
         (r"--bucket-mb must be positive", r"got 0")),
    Case("train-zero-4", train("--zero", 4), ConfigError,
         (r"--zero 4 is not supported", r"use 0 .* 1 .* 2 .* or 3")),
    Case("train-zero-2-half-comm", train("--zero", 2, "--grad-comm-dtype", "float16"), ConfigError,
         (r"--zero 2 runs on the CPU with --grad-comm-dtype float32", r"use --zero 1 there")),
    Case("train-qubits-too-many", train("--qubits", 99), ConfigError, (r"n_qubits", r"from 0 to 16", r"got 99")),
    Case("train-q-depth-zero", train("--qubits", 2, "--q-depth", 0), ConfigError,
         (r"q_depth", r"from 1 to 64", r"got 0\b")),
    Case("train-resume-without-ckpt-dir", train("--resume", ckpt=False), ConfigError,
         (r"--resume needs --ckpt-dir", r"the folder the checkpoints are in")),
    Case("train-ckpt-dir-is-a-file", train("--ckpt-dir", "{tmp}/out/afile"), ConfigError,
         (r"--ckpt-dir .*afile exists and is not a folder",),
         setup=lambda ctx: ctx.file("out/afile", "x")),
    Case("train-log-json-folder-missing", train("--log-json", "{tmp}/nowhere/log.json"), ConfigError,
         (r"--log-json .*nowhere/log\.json", r"folder .*nowhere does not exist; create it first")),
    Case("train-data-missing", train("--data", "{tmp}/no-such-corpus"), DataError,
         (r"no-such-corpus does not exist", r"pass a text file or a folder")),
    Case("train-data-empty-folder", train("--data", "{tmp}/empty"), DataError,
         (r"empty has no readable files ending in \.txt", r"point the path at a folder of text files"),
         setup=lambda ctx: (ctx.tmp / "empty").mkdir()),
    # the corpus is whole and cached (a cache, not an output); the run stops before any output
    Case("train-data-too-small-for-context", train("--data", "{tmp}/small.txt"), DataError,
         (r"has \d+ bytes, fewer than one window of context \+ 1 = 17", r"use a larger corpus"),
         setup=lambda ctx: ctx.file("small.txt", "0123456789" * 12), watch=("ckpt", "out")),
    # checkpoint folders from another model or run: rejected before a step, nothing rewritten
    Case("train-resume-other-dtype", train("--resume", "--dtype", "float64"), CheckpointError,
         (r"step-00000002 was saved by a different model", r"'dtype': 'float32'",
          r"resume with the same --preset and --dtype, or use another --ckpt-dir"), setup=Ctx.use_trained),
    Case("train-resume-other-qubits", train("--resume", "--qubits", 2), CheckpointError,
         (r"saved by a different model", r"'n_qubits': 0", r"use another --ckpt-dir"), setup=Ctx.use_trained),
    Case("train-resume-other-seed", train("--resume", "--seed", 7), CheckpointError,
         (r"trained with --seed 0", r"resume with the same --seed"), setup=Ctx.use_trained),
    Case("train-resume-other-batch", train("--resume", "--batch", 4), CheckpointError,
         (r"trained with --batch 2", r"resume with the same --batch"), setup=Ctx.use_trained),

    # the classifier example's flags (hpr.classify)
    Case("classify-window-1", classify("--window", 1), ConfigError, (r"--window must be at least 2", r"got 1\b")),
    Case("classify-eval-n-odd", classify("--eval-n", 3), ConfigError, (r"--eval-n must be even", r"got 3")),
    Case("classify-label-regex", classify("--label-regex", "(test"), ConfigError,
         (r"--label-regex '\(test' is not a regular expression", r"missing \)")),

    # GPTConfig and the model
    Case("config-heads-not-dividing", lambda ctx: hpr.model.GPTConfig(d_model=30, n_heads=4), ConfigError,
         (r"n_heads=4 does not divide d_model=30", r"pick a head count that divides it \(e\.g\. 1, 2, 3, 6\)")),
    Case("config-context-zero", lambda ctx: hpr.model.GPTConfig(context=0), ConfigError,
         (r"GPTConfig\.context must be a positive integer", r"got 0")),
    Case("config-width-float", lambda ctx: hpr.model.GPTConfig(d_model=32.0), ConfigError,
         (r"GPTConfig\.d_model must be a positive integer", r"got 32\.0")),
    Case("config-dtype", lambda ctx: hpr.model.GPTConfig(dtype="float16"), ConfigError,
         (r"dtype 'float16' is not supported", r"use one of float32, float64")),
    Case("config-qubits-17", lambda ctx: hpr.model.GPTConfig(n_qubits=17), ConfigError,
         (r"n_qubits must be an integer from 0 to 16", r"got 17")),
    Case("config-preset-unknown", lambda ctx: hpr.model.GPTConfig.preset("XL"), ConfigError,
         (r"unknown preset 'XL'", r"choose one of tiny, S, M")),
    Case("config-preset-unknown-field", lambda ctx: hpr.model.GPTConfig.preset("tiny", n_layer=3), ConfigError,
         (r"unknown GPTConfig field\(s\) 'n_layer'", r"the fields are .*n_layers")),
    Case("model-tokens-outside-vocab", tokens_outside_vocab, ConfigError,
         (r"outside the vocabulary \[0, 256\)", r"max 300", r"check the tokenizer or the data")),

    # data paths (hpr.data): nothing cached for a corpus that cannot be read
    Case("data-missing-folder", corpus_load(lambda ctx: ctx.tmp / "gone"), DataError,
         (r"gone does not exist", r"pass a text file or a folder")),
    Case("data-folder-without-text", corpus_load(lambda ctx: ctx.file("docs/a.csv", "1,2").parent), DataError,
         (r"docs has no readable files ending in \.txt, \.md, \.rst, \.py", r"pass the suffixes its files use")),
    Case("data-all-files-empty", corpus_load(lambda ctx: (ctx.file("e/a.txt", ""), ctx.file("e/b.md", ""))[0].parent),
         DataError, (r"all 2 files are empty", r"pass a corpus with text in it")),
    Case("data-not-a-regular-file", corpus_load(make_fifo), DataError,
         (r"pipe\.txt is neither a regular file nor a folder", r"pass a text file or a folder")),
    Case("data-unreadable-file", corpus_load(unreadable), DataError,
         (r"secret\.txt is not readable", r"fix its permissions or pass another file")),
    Case("data-too-small-for-context", too_small_then_check, DataError,
         (r"validation split of file .*small\.txt has 10 bytes, fewer than one window of context \+ 1 = 17",
          r"use a larger corpus"), watch=("ckpt", "out")),
    Case("data-val-permille-0", corpus_load(lambda ctx: ctx.data, val_permille=0), DataError,
         (r"val_permille=0", r"integer from 1 to 999")),
    Case("data-val-permille-1000", corpus_load(lambda ctx: ctx.data, val_permille=1000), DataError,
         (r"val_permille=1000", r"integer from 1 to 999")),
    Case("labels-one-class-only", labels_load(lambda ctx: ctx.data, window=16, suffixes=(".txt",)), DataError,
         (r"has no file with label 1 of at least window=16 bytes", r"Pass a folder with files of both labels")),
    Case("labels-file-not-folder", labels_load(lambda ctx: ctx.data / "doc0.txt"), DataError,
         (r"doc0\.txt is not a folder", r"pass a folder of files with --data")),
    Case("batches-context-too-long", lambda ctx: hpr.data.Batches(np.zeros(50, np.uint8), 50, seed=0), DataError,
         (r"50 tokens are fewer than one window of context \+ 1 = 51", r"smaller context")),

    # layouts (hpr.parallel.ProcessGrid), checked against the world size before any split
    Case("grid-tp-not-dividing-world", grid(4, tp=3), ConfigError,
         (r"tp x pp = 3 x 1 = 3 does not divide the job's 4 ranks", r"Layouts that work for 4 rank\(s\).*--tp 4")),
    Case("grid-tp-not-dividing-heads", grid(3, tp=3, n_heads=4), ConfigError,
         (r"tp=3 does not divide the 4 attention heads", r"--dp 3 --tp 1 --pp 1")),
    Case("grid-tp-not-dividing-vocab", grid(3, tp=3, n_heads=6, vocab_size=256), ConfigError,
         (r"tp=3 does not divide the vocabulary of 256", r"Layouts that work .*--dp 3 --tp 1 --pp 1")),
    Case("grid-pp-more-than-layers", grid(4, pp=4, n_layers=2), ConfigError,
         (r"pp=4 stages need at least 4 layers; the model has 2", r"--dp 2 --tp 1 --pp 2")),
    Case("grid-batch-not-dividing", grid(2, batch=3), ConfigError,
         (r"--batch 3 does not split evenly over 2 data-parallel", r"use a multiple of 2")),
    Case("grid-product-not-world", grid(2, dp=3), ConfigError,
         (r"dp x tp x pp = 3 x 1 x 1 = 3, but the job has 2 ranks", r"--dp 2 --tp 1 --pp 1")),
    Case("grid-tp-zero", grid(2, tp=0), ConfigError, (r"must be at least 1 \(got dp=None, tp=0", r"Layouts that work")),

    # state vectors (hpr.quantum.StateVector)
    Case("sv-qubit-out-of-range", sv(lambda s, ctx: s.apply("h", [3])), ConfigError,
         (r"qubit 3 is out of range for 3 qubits", r"\(0\.\.2\)")),
    Case("sv-qubit-repeated", sv(lambda s, ctx: s.apply("cx", [1, 1])), ConfigError,
         (r"qubits \[1, 1\] repeat a qubit",)),
    Case("sv-qubit-not-integer", sv(lambda s, ctx: s.apply("h", [0.5])), ConfigError,
         (r"qubit 0\.5 is not an integer", r"give qubit indices from 0 to 2")),
    Case("sv-qubit-string", sv(lambda s, ctx: s.apply("h", ["a"])), ConfigError,
         (r"qubit 'a' is not an integer", r"from 0 to 2")),
    Case("sv-gate-not-a-name", sv(lambda s, ctx: s.apply(3, [0])), ConfigError,
         (r"not 3", r"a string such as 'h'", r"apply_matrix")),
    Case("sv-unknown-gate", sv(lambda s, ctx: s.apply("foo", [0])), ConfigError,
         (r"unknown gate 'foo'", r"hpr knows .*cx.*or use apply_matrix")),
    Case("sv-wrong-qubit-count", sv(lambda s, ctx: s.apply("cx", [0])), ConfigError,
         (r"cx acts on 2 qubit\(s\), got 1",)),
    Case("sv-matrix-shape", sv(lambda s, ctx: s.apply_matrix(np.eye(3), [0])), ConfigError,
         (r"got shape \(3, 3\)", r"wants a \(2, 2\) or \(4, 4\) matrix")),
    Case("sv-non-unitary-hpr-check", non_unitary, ConfigError,
         (r"not unitary", r"\|U U\^H - I\| = 1\.00e\+00")),
    Case("sv-params-batch-length", sv(lambda s, ctx: s.apply("rx", [0], params=np.zeros(5))), ConfigError,
         (r"one number or one per state \(2\)", r"got shape \(5,\)")),
    Case("sv-too-large-for-machine", lambda ctx: hpr.quantum.StateVector(40), ConfigError,
         (r"40 qubits in complex128 need 16384\.00 GiB", r"GiB free", r"Use fewer qubits")),
    Case("sv-too-large-before-allocating", state_before_alloc, ConfigError,
         (r"2 state\(s\) of 22 qubits in complex128 need 0\.12 GiB; this machine has 0\.06 GiB free",
          r"Use fewer qubits, a smaller batch, complex64"),
         after=lambda ctx: ctx.notes["peak"] < (1 << 20)),
    Case("sv-beyond-40-qubits", lambda ctx: hpr.quantum.StateVector(41), ConfigError,
         (r"41 qubits", r"need 32,768 GiB", r"DistributedStateVector")),
    Case("sv-dtype-unknown", lambda ctx: hpr.quantum.StateVector(2, dtype="junk"), ConfigError,
         (r"state dtype 'junk'", r"use complex64 or complex128")),
    Case("sv-pauli-letters", sv(lambda s, ctx: s.expval("XYQ")), ConfigError,
         (r"Pauli string 'XYQ'", r"give 3 letters from I, X, Y, Z")),
    Case("dsv-not-a-communicator", dsv(3, lambda: hpr.init().mpi), ConfigError,
         (r"needs an hpr Communicator \(hpr\.init\(\)\), not Intracomm",)),
    Case("dsv-no-qubits", dsv(0, hpr.init), ConfigError, (r"n_qubits must be a positive integer",)),

    # circuits (hpr.quantum.circuit.Circuit.add)
    Case("circuit-add-unknown-gate", circuit(lambda C: C(2).add("foo", [0])), ConfigError,
         (r"unknown gate 'foo'", r"hpr knows")),
    Case("circuit-add-qubit-out-of-range", circuit(lambda C: C(2).add("h", [2])), ConfigError,
         (r"h on \[2\]", r"needs 1 distinct qubit\(s\) in 0\.\.1")),
    Case("circuit-add-input-out-of-range", circuit(lambda C: C(2, n_inputs=1).add("rx", [0], ("in", 3))),
         ConfigError, (r"parameter \('in', 3\)", r"must be \('in', 0\.\.0\)")),
    Case("circuit-add-weight-on-fixed-gate", circuit(lambda C: C(2, n_weights=1).add("h", [0], ("w", 0))),
         ConfigError, (r"h: only rx, ry, rz, rzz can take inputs or weights",)),
    Case("circuit-n-qubits-not-a-number", circuit(lambda C: C("abc")), ConfigError,
         (r"'abc'", r"n_qubits")),
    Case("circuit-add-qubit-not-a-number", circuit(lambda C: C(2).add("h", ["x"])), ConfigError,
         (r"'x'", r"0\.\.1")),

    # QASM files (hpr.quantum.qasm) and the command (python -m hpr.quantum run)
    Case("qasm-syntax-error", qasm_text("OPENQASM 2.0;\nqreg q[2];\nh q[0]\ncx q[0], q[1];\n"), QasmError,
         (r"circuit\.qasm:4: syntax error: expected ';', got 'cx'",)),
    Case("qasm-unexpected-character", qasm_text("OPENQASM 2.0;\nqreg q[1];\nh q[0]; @\n"), QasmError,
         (r"circuit\.qasm:3: syntax error: unexpected character '@'",)),
    Case("qasm-unsupported-statement", qasm_text("OPENQASM 2.0;\nqreg q[2];\nopaque g a;\n"), QasmError,
         (r"circuit\.qasm:3: unsupported statement 'opaque'", r"defined with a gate body")),
    Case("qasm-undefined-register", qasm_text("OPENQASM 2.0;\nqreg q[2];\nh r[0];\n"), QasmError,
         (r"circuit\.qasm:3: 'r' is not a declared qreg", r"declare it before use \(qreg r\[n\];\)",
          r"declared qregs: q")),
    Case("qasm-gate-on-creg", qasm_text("OPENQASM 2.0;\nqreg q[1];\ncreg c[1];\nh c[0];\n"), QasmError,
         (r"circuit\.qasm:4: 'c' is a classical register", r"gates act on a qreg")),
    Case("qasm-qubit-out-of-range", qasm_text("OPENQASM 2.0;\nqreg q[2];\nh q[5];\n"), QasmError,
         (r"circuit\.qasm:3: qubit index q\[5\] is out of range for qreg q\[2\]", r"indices 0\.\.1")),
    Case("qasm-other-include", qasm_text('OPENQASM 2.0;\ninclude "mylib.inc";\nqreg q[1];\n'), QasmError,
         (r"circuit\.qasm:2: include \"mylib\.inc\"", r"only \"qelib1\.inc\" is supported")),
    Case("qasm-version-4", qasm_text("OPENQASM 4.0;\nqreg q[1];\n"), QasmError,
         (r"circuit\.qasm:1: OPENQASM 4\.0", r"hpr reads OpenQASM 2\.0 and 3")),
    Case("qasm-unknown-gate", qasm_text("OPENQASM 2.0;\nqreg q[1];\nfoo q[0];\n"), QasmError,
         (r"circuit\.qasm:3: unsupported gate 'foo'", r"define others with a gate definition")),
    Case("qasm-no-qreg", qasm_text("OPENQASM 2.0;\ncreg c[1];\n"), QasmError,
         (r"no qreg declared", r"declare them first, e\.g\. qreg q\[2\];")),
    Case("qasm-missing-file", lambda ctx: hpr.quantum.qasm.load(ctx.tmp / "nope.qasm"), QasmError,
         (r"nope\.qasm: file not found", r"check the path")),
    Case("qasm-not-text", lambda ctx: hpr.quantum.qasm.load(ctx.file("bin.qasm", b"\xff\xfe\x00")), QasmError,
         (r"bin\.qasm: is not UTF-8 text", r"pass an OpenQASM 2\.0 text file")),
    Case("qasm-folder", lambda ctx: hpr.quantum.qasm.load(ctx.out), QasmError,
         (r"out: is a folder, not a \.qasm file", r"pass the circuit's file")),
    Case("qasm-run-too-many-qubits", lambda ctx: hpr.quantum.qasm.run("OPENQASM 2.0;\nqreg q[45];\nh q[0];\n"),
         ConfigError, (r"45 qubits is beyond one rank's memory", r"GiB", r"DistributedStateVector")),
    Case("qasm-cli-missing-circuit", qasm_cli("{tmp}/nope.qasm", "--out", "{out}/state.npy"), QasmError,
         (r"nope\.qasm: file not found", r"check the path")),
    Case("qasm-cli-out-folder-missing", qasm_cli("{data}/bell.qasm", "--out", "{tmp}/nowhere/state.npy"),
         ConfigError, (r"--out .*nowhere/state\.npy", r"folder .*nowhere does not exist; create it first")),
    Case("qasm-cli-out-is-a-folder", qasm_cli("{data}/bell.qasm", "--out", "{out}"), ConfigError,
         (r"--out .*out is a folder", r"give a file name such as .*state\.npy")),

    # checkpoint folders (hpr.checkpoint.validate: what --resume checks before it trusts a folder)
    Case("ckpt-meta-corrupted", exc=CheckpointError,
         must=(r"step-00000002: meta\.json missing or unreadable", HINT_CKPT),
         **ckpt_damaged(lambda d: (d / "meta.json").write_text("{not json"))),
    Case("ckpt-file-missing", exc=CheckpointError,
         must=(r"step-00000002: optim\.safetensors is missing", HINT_CKPT),
         **ckpt_damaged(lambda d: (d / "optim.safetensors").unlink())),
    Case("ckpt-sha-tampered", exc=CheckpointError,
         must=(r"step-00000002: params\.safetensors fails its sha256 check", HINT_CKPT),
         **ckpt_damaged(lambda d: _flip_byte(d / "params.safetensors"))),

    # collective arguments (hpr.init()'s Communicator, one rank)
    Case("comm-dtype-complex", comm(lambda c: c.allreduce(np.ones(4, np.complex64))), ConfigError,
         (r"dtype complex64 is not supported", r"use one of float16, bfloat16, float32, float64, int32, int64")),
    Case("comm-non-contiguous", comm(lambda c: c.allreduce(np.ones(8, np.float32)[::2])), ConfigError,
         (r"allreduce needs a C-contiguous array", r"pass numpy\.ascontiguousarray\(x\)")),
    Case("comm-read-only", comm(lambda c: c.allreduce(np.frombuffer(b"\0" * 16, np.float32))), ConfigError,
         (r"allreduce works in place and needs a writable array",)),
    Case("comm-unknown-op", comm(lambda c: c.allreduce(np.ones(4, np.float32), op="prod")), ConfigError,
         (r"unknown reduction op 'prod'", r"use one of sum, max, min, avg")),
    Case("comm-op-not-a-name", comm(lambda c: c.allreduce(np.ones(4, np.float32), op=["sum"])), ConfigError,
         (r"op \['sum'\] is not a reduction name", r"use one of sum, max, min, avg")),
    Case("comm-avg-on-int", comm(lambda c: c.iallreduce(np.ones(4, np.int32), op="avg")), ConfigError,
         (r"op 'avg' needs a floating dtype", r"use 'sum' and divide")),
    Case("comm-not-an-array", comm(lambda c: c.allreduce([1.0, 2.0])), ConfigError,
         (r"allreduce takes a numpy array, not list", r"numpy\.asarray")),
    Case("comm-broadcast-root", comm(lambda c: c.broadcast(np.ones(4), root=3)), ConfigError,
         (r"rank 3 is outside this communicator of 1 ranks",)),
    Case("comm-send-rank", comm(lambda c: c.send(np.ones(4), 5)), ConfigError,
         (r"isend: rank 5 is outside this communicator of 1 ranks",)),
    Case("comm-alloc-negative", comm(lambda c: c.alloc((-1, 4))), ConfigError,
         (r"alloc: shape \(-1, 4\) has a negative dimension",)),

    # environment variables
    Case("env-timeout-not-a-number", env_comm(HPR_TIMEOUT="abc"), ConfigError,
         (r"HPR_TIMEOUT='abc' is not a number of seconds",)),
    Case("env-timeout-negative", env_comm(HPR_TIMEOUT="-5"), ConfigError, (r"HPR_TIMEOUT='-5' must be > 0",)),
    Case("env-allreduce-bogus", env_comm(HPR_ALLREDUCE="bogus"), ConfigError,
         (r"HPR_ALLREDUCE='bogus' is not an algorithm", r"use auto or one of recursive_doubling")),
    Case("env-spin-negative", env_comm(HPR_SPIN_US="-1"), ConfigError, (r"HPR_SPIN_US='-1' must be >= 0",)),
    Case("env-timeout-inf", env_comm(HPR_TIMEOUT="inf"), ConfigError,
         (r"HPR_TIMEOUT='inf' must be a finite number of seconds",)),
    Case("env-timeout-nan", env_comm(HPR_TIMEOUT="nan"), ConfigError,
         (r"HPR_TIMEOUT='nan' must be a finite number of seconds",)),
    Case("env-timeout-overflows", env_comm(HPR_TIMEOUT="1e10"), ConfigError,
         (r"HPR_TIMEOUT='1e10' must be a finite number of seconds at most",)),
    Case("env-spin-inf", env_comm(HPR_SPIN_US="inf"), ConfigError,
         (r"HPR_SPIN_US='inf' must be a finite number of microseconds",)),
    Case("env-spin-nan", env_comm(HPR_SPIN_US="nan"), ConfigError,
         (r"HPR_SPIN_US='nan' must be a finite number of microseconds",)),
    Case("env-spin-past-timeout", env_comm(HPR_TIMEOUT="2", HPR_SPIN_US="3000000"), ConfigError,
         (r"HPR_SPIN_US='3000000' must be a finite number of microseconds at most 2e\+06",)),
    Case("env-node-size", env_comm(HPR_NODE_SIZE="two"), ConfigError,
         (r"HPR_NODE_SIZE='two' must be a whole number >= 0",)),
    Case("env-num-threads-zero", in_subprocess("hpr.init()", HPR_NUM_THREADS="0"), ConfigError,
         (r"HPR_NUM_THREADS='0'", r"at least 1|>= 1")),
]


def _params():
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def test_the_catalogue_is_complete():
    """At least 40 cases (issue 8), unique names, and every group of entry points present."""
    ids = [c.id for c in CASES]
    assert len(ids) >= 45 and len(set(ids)) == len(ids)
    for group in ("train", "classify", "config", "data", "grid", "sv", "dsv", "circuit", "qasm", "ckpt",
                  "comm", "env"):
        assert any(i.startswith(group + "-") for i in ids), group


@pytest.mark.parametrize("case", _params())
def test_bad_input(case, tmp_path, corpus, trained, monkeypatch):
    ctx = Ctx(tmp_path, corpus, trained, monkeypatch)
    if case.setup is not None:
        case.setup(ctx)
    folders = {"ckpt": ctx.ckpt, "out": ctx.out, "cache": ctx.cache}
    before = {k: snapshot(folders[k]) for k in case.watch}
    with pytest.raises(HprError) as info:
        case.call(ctx)
    e = info.value
    assert type(e) is case.exc, f"{type(e).__name__} instead of {case.exc.__name__}: {e}"
    msg = str(e)
    for rx in case.must:
        assert re.search(rx, msg, re.S), f"message lacks /{rx}/:\n{msg}"
    if case.after is not None:
        assert case.after(ctx), ctx.notes
    for k in case.watch:
        assert snapshot(folders[k]) == before[k], f"{k} folder changed:\n{before[k]}\n{snapshot(folders[k])}"
    assert not half_written(tmp_path)


# -- every rank raises, and the job ends ---------------------------------------------------------------
def launch(n, argv, tmp_path, env, **extra):
    """(exit code, stdout + stderr, seconds) of `mpiexec -n n python argv...`; the whole tree is
    killed and the test fails if it outlives 90 s (a hang)."""
    r = mpi_job(n, argv, tmp_path, env, 90, merge=True, **extra)
    return r.code, r.out, r.seconds


def test_every_rank_rejects_a_layout_that_does_not_fit(tmp_path, corpus, env):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    out.mkdir()
    code, text, took = launch(2, ["-m", "hpr.train", *_train_flags(corpus, ckpt, out), "--pp", "3"], tmp_path, env,
                              HPR_CACHE_DIR=tmp_path / "cache")
    assert code != 0, text
    assert text.count("error: layout dp=auto tp=1 pp=3 cannot run: tp x pp = 1 x 3 = 3 does not divide the "
                      "job's 2 ranks") == 2, text
    assert "Traceback" not in text, text
    assert not ckpt.exists() and not any(out.iterdir()) and not (tmp_path / "cache").exists()
    assert took < 60


def test_every_rank_rejects_a_missing_corpus(tmp_path, corpus, env):
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    out.mkdir()
    flags = _train_flags(corpus, ckpt, out)
    flags[flags.index("--data") + 1] = str(tmp_path / "no-such-corpus")
    code, text, took = launch(2, ["-m", "hpr.train", *flags], tmp_path, env, HPR_CACHE_DIR=tmp_path / "cache")
    assert code != 0, text
    assert text.count("no-such-corpus does not exist: pass a text file or a folder") == 2, text
    assert not ckpt.exists() and not any(out.iterdir()) and not (tmp_path / "cache").exists()
    assert took < 60


def test_every_rank_rejects_a_checkpoint_of_another_model(tmp_path, corpus, trained, env):
    src_ckpt, src_cache = trained
    ckpt, out, cache = tmp_path / "ckpt", tmp_path / "out", tmp_path / "cache"
    out.mkdir()
    shutil.copytree(src_ckpt, ckpt)
    shutil.copytree(src_cache, cache)
    before = (snapshot(ckpt), snapshot(cache))
    code, text, took = launch(2, ["-m", "hpr.train", *_train_flags(corpus, ckpt, out), "--resume", "--dtype",
                                  "float64"], tmp_path, env, HPR_CACHE_DIR=cache)
    assert code != 0, text
    assert text.count("step-00000002 was saved by a different model") == 2, text
    assert (snapshot(ckpt), snapshot(cache)) == before and not any(out.iterdir())
    assert took < 60


def test_every_rank_rejects_a_missing_qasm_file(tmp_path, env):
    code, text, took = launch(2, ["-m", "hpr.quantum", "run", tmp_path / "nope.qasm", "--out",
                                  tmp_path / "state.npy"], tmp_path, env)
    assert code != 0, text
    assert text.count("nope.qasm: file not found; check the path") == 2, text
    assert not (tmp_path / "state.npy").exists() and not half_written(tmp_path)
    assert took < 60


def test_every_rank_rejects_a_sharded_state_over_3_ranks(tmp_path, env):
    code, text, took = launch(3, [script(tmp_path, """
        import sys, hpr
        from hpr.quantum import DistributedStateVector
        comm = hpr.init(abort_on_exception=False)
        try:
            DistributedStateVector(6, comm)
        except hpr.ConfigError as e:
            print(f"rank {comm.rank}: ConfigError: {e}", flush=True)
            sys.exit(3)
        """)], tmp_path, env)
    assert code != 0, text
    # (the ranks' lines may interleave in the merged output: each report is found by itself)
    said = re.findall(r"rank (\d): ConfigError: DistributedStateVector needs 2\*\*g ranks \(1, 2, 4, 8, \.\.\.\); "
                      r"this communicator has 3\. Run with a power-of-two rank count", text)
    assert sorted(said) == ["0", "1", "2"], text
    assert took < 60


@pytest.mark.parametrize("rank1", ["np.ones(8, np.float64)", "np.ones(9, np.float32)"], ids=["dtype", "length"])
def test_every_rank_reports_a_mismatched_collective(tmp_path, rank1, env):
    code, text, took = launch(2, [script(tmp_path, f"""
        import sys, numpy as np, hpr
        comm = hpr.init(abort_on_exception=False)
        x = np.ones(8, np.float32) if comm.rank == 0 else {rank1}
        try:
            comm.allreduce(x)
        except hpr.CommMismatch as e:
            print(f"rank {{comm.rank}}: CommMismatch: " + str(e).replace(chr(10), " | "), flush=True)
            sys.exit(3)
        """)], tmp_path, env, HPR_CHECK=1)
    assert code != 0, text
    said = re.findall(r"rank (\d): CommMismatch: allreduce #1: ranks called it differently \(HPR_CHECK=1\):"
                      r"[^\n]*?fix the rank that differs", text)
    assert sorted(said) == ["0", "1"], text
    assert took < 60
