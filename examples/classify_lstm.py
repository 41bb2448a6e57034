"""The LSTM classifier of TensorFlow's MirroredStrategy tutorial, on hpr: is this window of bytes from a
test module of Python's standard library? Trained data-parallel over every rank.

    mpiexec -n 2 python examples/classify_lstm.py

All flags: python examples/classify_lstm.py --help"""
import sys

from hpr.classify import main

if __name__ == "__main__":
    sys.exit(main())
