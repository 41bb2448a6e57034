"""``python -m hpr.convert to-hf CKPT_DIR OUT_DIR`` and ``python -m hpr.convert from-hf HF_DIR CKPT_DIR``:
the command line of hpr.convert. Exit 0 on success; 2 with the error's message (what is wrong and what
to do) when the input does not convert, nothing written."""
import argparse
import sys

from ..errors import HprError
from ..model import PRESETS, saved
from . import from_hf, to_hf


def build_parser():
    ap = argparse.ArgumentParser(prog="python -m hpr.convert",
                                 description="Convert GPT weights between hpr checkpoints and Hugging Face GPT-2 folders.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("to-hf", help="an hpr checkpoint -> a folder GPT2LMHeadModel / AutoTokenizer load")
    t.add_argument("ckpt_dir", help="a --ckpt-dir of a training run (its newest intact checkpoint) or a step folder")
    t.add_argument("out_dir", help="the Hugging Face folder to write (must not exist, or be empty)")
    t.add_argument("--tokenizer", default=None, help="tokenizer.json to ship instead of the checkpoint's")
    t.add_argument("--dtype", default=None, help="float32 or float64 (default: the checkpoint's)")
    f = sub.add_parser("from-hf", help="a GPT-2-architecture Hugging Face folder -> an hpr checkpoint")
    f.add_argument("hf_dir", help="folder with config.json, model.safetensors (or pytorch_model.bin) and a tokenizer")
    f.add_argument("ckpt_dir", help="the checkpoint folder to write (must not exist, or be empty)")
    f.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    f.add_argument("--pad-vocab", type=int, default=64, metavar="K",
                   help="pad the embedding rows to a multiple of K (tensor parallelism, fast matmuls; default 64)")
    f.add_argument("--tokenizer", default=None, help="tokenizer.json to use instead of the folder's")
    f.add_argument("--seed", type=int, default=0, help="the --seed a resumed training run will use (default 0)")
    f.add_argument("--batch", type=int, default=16, help="the --batch a resumed training run will use (default 16)")
    return ap


def _resume_hint(cfg, a):
    """How to train on: the preset of the same shape, or why there is none."""
    shape = {k: cfg[k] for k in ("context", "d_model", "n_layers", "n_heads")}
    name = next((n for n, p in PRESETS.items() if p == shape), None)
    if name is None:
        return f"no trainer --preset has its shape {shape}, so it converts for generation (and back) only"
    if cfg["vocab_size"] != 256:
        return (f"the trainer's --preset {name} has its shape, but trains a 256-token vocabulary, not its "
                f"{cfg['vocab_size']}")
    return (f"train on with python -m hpr.train --preset {name} --dtype {cfg['dtype']} --ckpt-dir {a.ckpt_dir} "
            f"--resume --seed {a.seed} --batch {a.batch}")


def main(argv=None):
    a = build_parser().parse_args(argv)
    try:
        if a.command == "to-hf":
            out = to_hf(a.ckpt_dir, a.out_dir, tokenizer=a.tokenizer, dtype=a.dtype)
            print(f"wrote {out}: load it with transformers.GPT2LMHeadModel.from_pretrained({out!r}) and "
                  f"AutoTokenizer.from_pretrained({out!r})")
        else:
            out = from_hf(a.hf_dir, a.ckpt_dir, dtype=a.dtype, pad_to=a.pad_vocab, tokenizer=a.tokenizer,
                          seed=a.seed, batch=a.batch)
            print(f"wrote {out}: generate with python -m hpr.generate --ckpt {a.ckpt_dir}; "
                  + _resume_hint(saved.validate(out)["config"], a))
    except HprError as e:
        print(f"hpr.convert: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
