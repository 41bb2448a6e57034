"""``python -m hpr.train [flags]``: the trainer's command line (hpr.train.main); --help lists the flags."""
import sys

from . import main

sys.exit(main())
