"""Train hpr's compact GPT on the built-in corpus (Python's own standard library) or --data PATH.

    python examples/train_lm.py --preset S --steps 300 --batch 16 --lr 1e-3

All flags: python examples/train_lm.py --help"""
import sys

from hpr.train import main

if __name__ == "__main__":
    sys.exit(main())
