"""Text from a checkpoint: ``python -m hpr.generate --ckpt DIR --prompt TEXT`` streams the continuation
to stdout as it is produced; with no --prompt it reads prompts from stdin, one per line. Under
``mpiexec -n N`` the model's heads are split over the N ranks (tensor parallelism, each rank caching
its own heads' keys and values) and rank 0 prints. Works on any hpr checkpoint that carries its
tokenizer (or was trained on bytes), including ones made by ``python -m hpr.convert from-hf``.

Owns text: prompts to ids, the streaming decode (a token may end inside a multi-byte UTF-8 character,
so text is shown only once it is whole), stop strings (never shown, and text that might begin one is
held back until it cannot). The decoding itself is hpr.model.kvcache's.

Usage: ``python -m hpr.generate --ckpt runs/ck --prompt "def " --max-tokens 100 --temperature 0.8``"""
import argparse
import sys

import numpy as np

import hpr

from .errors import CheckpointError, ConfigError, HprError
from .model import GPT, Sampler, generate
from .parallel import TensorParallel

END_OF_TEXT = "<|endoftext|>"
_UTF8_MAX = 4  # bytes in one UTF-8 character: a replacement character held longer than this is real


class TextStream:
    """One row's new ids -> text, piece by piece: push(id) returns the text that became safe to show.
    `done` once a stop string appeared; `text` is everything decoded so far, cut before the stop."""

    def __init__(self, tokenizer, stop=()):
        self.tok, self.stop = tokenizer, [s for s in stop if s]
        self.ids, self.text, self.shown, self.done = [], "", 0, False
        self._read = 0  # ids[:_read] are in self.text

    def push(self, tok_id):
        if self.done:
            return ""
        self.ids.append(int(tok_id))
        piece = self.tok.decode(self.ids[self._read:])
        if piece.endswith("\ufffd") and len(self.ids) - self._read < _UTF8_MAX:
            return ""  # the last token ends inside a character: wait for the rest of it
        self.text += piece
        self._read = len(self.ids)
        return self._release()

    def finish(self):
        """The rest, held-back text included (the row has ended)."""
        out = ""
        if not self.done and self._read < len(self.ids):
            self.text += self.tok.decode(self.ids[self._read:])
            self._read = len(self.ids)
            out = self._release()  # a stop string may still complete here
        if not self.done:
            out += self.text[self.shown:]  # what was held back as a possible stop string's start
        self.shown = len(self.text)
        return out

    def _release(self):
        for s in self.stop:
            i = self.text.find(s, self.shown)
            if i >= 0:
                self.text, self.done = self.text[:i], True
        hold = 0 if self.done else max((k for s in self.stop for k in range(1, len(s))
                                        if self.text.endswith(s[:k])), default=0)
        out = self.text[self.shown:len(self.text) - hold]
        self.shown += len(out)
        return out


def complete(model, prompts, max_tokens, sampler, stop=(), on_text=None):
    """Continuations of a batch of text prompts: [str]. on_text(row, text) is called with each piece
    as soon as it is safe to show. Ends a row at the tokenizer's <|endoftext|> (if it has one), at a
    stop string, or after max_tokens. Collective over the model's tensor-parallel group."""
    tok = model.tokenizer
    if tok is None:
        raise CheckpointError("the checkpoint has no tokenizer.json and its vocabulary is not bytes, so text "
                              "cannot be turned into its ids; put the model's tokenizer.json in the checkpoint folder")
    eos = tok.eot  # its end-of-text token (GPT-2: <|endoftext|>), or None
    ids = tok.encode_batch(list(prompts))
    for i, row in enumerate(ids):
        if not row:
            if eos is None:
                raise ConfigError(f"prompt {i} is empty and the tokenizer has no {END_OF_TEXT} to start from; give "
                                  "a prompt of at least one character")
            row.append(eos)  # GPT-2 starts a text after its end-of-text token
    streams = [TextStream(tok, stop) for _ in ids]

    def on_tokens(new, live):
        for b in np.flatnonzero(live):
            if new[b] == eos:
                continue
            piece = streams[b].push(new[b])
            if piece and on_text:
                on_text(b, piece)
        return np.array([s.done for s in streams])

    generate(model, ids, max_tokens, sampler, eos_id=eos, on_tokens=on_tokens)
    for b, s in enumerate(streams):
        rest = s.finish()
        if rest and on_text:
            on_text(b, rest)
    return [s.text for s in streams]


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m hpr.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="a checkpoint folder (--ckpt-dir of a run, a step-* folder in "
                    "it, or the output of python -m hpr.convert from-hf)")
    ap.add_argument("--prompt", action="append", default=None,
                    help="text to continue; give it several times for a batch (default: read lines from stdin)")
    ap.add_argument("--max-tokens", type=int, default=200, help="new tokens per prompt at most (default 200)")
    ap.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    ap.add_argument("--top-k", type=int, default=None, help="sample among the K likeliest tokens only")
    ap.add_argument("--top-p", type=float, default=None, help="sample among the likeliest tokens whose "
                    "probability reaches P (nucleus sampling)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampler (default 0)")
    ap.add_argument("--stop", action="append", default=[], help="end a continuation at this text (not "
                    "printed); may be given several times")
    ap.add_argument("--dtype", default=None, help="float32 or float64 (default: the checkpoint's)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads per rank")
    return ap


def check_args(a):
    if a.max_tokens < 0:
        raise ConfigError(f"--max-tokens must be >= 0, got {a.max_tokens}")
    if a.threads is not None and a.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {a.threads}")
    if a.dtype not in (None, "float32", "float64"):
        raise ConfigError(f"--dtype {a.dtype!r}: use float32 or float64")
    return Sampler(a.temperature, a.top_k, a.top_p, a.seed)  # ConfigError for a bad value


def _on_every_rank(world, fn):
    """fn() on every rank; when any rank fails, every rank raises the first failure (same type)."""
    res, err = None, None
    try:
        res = fn()
    except HprError as e:
        err = (type(e).__name__, str(e))
    errs = world.bcast_obj(world.gather_obj(err, root=0), root=0)
    for r, e in enumerate(errs):
        if e is not None:
            kind = {"CheckpointError": CheckpointError}.get(e[0], ConfigError)
            raise kind(e[1] if world.size == 1 else f"rank {r}: {e[1]}")
    return res


def _prompts(a, world):
    """The prompts to run, one batch at a time: the --prompt batch, or each stdin line (rank 0 reads,
    every rank gets it)."""
    if a.prompt is not None:
        yield a.prompt
        return
    while True:
        line = sys.stdin.readline() if world.rank == 0 else None
        line = world.bcast_obj(line if line else None, root=0)
        if line is None:
            return
        yield [line.rstrip("\n")]


def run(a, world):
    sampler = _on_every_rank(world, lambda: check_args(a))
    tp = TensorParallel(world) if world.size > 1 else None
    model = _on_every_rank(world, lambda: GPT.load(a.ckpt, dtype=a.dtype, tp=tp))
    lead = world.rank == 0
    for batch in _prompts(a, world):
        if len(batch) == 1:  # stream the one continuation as it comes
            if lead:
                sys.stdout.write(batch[0])
                sys.stdout.flush()
            show = (lambda b, piece: (sys.stdout.write(piece), sys.stdout.flush())) if lead else None
            _on_every_rank(world, lambda: complete(model, batch, a.max_tokens, sampler, a.stop, show))
            if lead:
                print(flush=True)
        else:
            texts = _on_every_rank(world, lambda: complete(model, batch, a.max_tokens, sampler, a.stop))
            if lead:
                print("\n---\n".join(p + t for p, t in zip(batch, texts)), flush=True)
    return 0


def main(argv=None):
    a = build_parser().parse_args(argv)
    world = hpr.init(threads=a.threads if a.threads and a.threads > 0 else None)
    try:
        return run(a, world)
    except HprError as e:
        print(f"hpr.generate: {e}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
