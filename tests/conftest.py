"""Shared test setup: the tests exercise the installed hpr (with its compiled kernels), as a user would.

Fixtures: rng (a seeded numpy Generator), corpus (a small text corpus in a folder, for the trainer),
env (the environment for subprocess runs: a private corpus cache, HPR_TIMEOUT=30). The process
plumbing lives in tests/launch.py (a plain module, so tests/run_all.py shares it) and is re-exported
here: find_mpiexec, mpiexec, descendants, kill_tree, run_tree, Finished. Test modules import plain
functions from launch.py / train_jobs.py, never from another test module.

Usage: ``def test_x(corpus, env, tmp_path): run_tree([mpiexec(), "-n", "2", ...], 60, env=env)``"""
import os
import random

import pytest

# helpers outside test modules get pytest's assert messages too (before they are first imported)
pytest.register_assert_rewrite("launch", "train_jobs")

from launch import Finished, descendants, find_mpiexec, kill_tree, mpiexec, run_tree  # noqa: E402

__all__ = ["Finished", "descendants", "find_mpiexec", "kill_tree", "mpiexec", "run_tree"]


def pytest_configure(config):
    import hpr

    try:
        from hpr.cpu import cpu_kernels

        cpu_kernels()
    except hpr.KernelsMissing as e:
        raise pytest.UsageError(f"{e}\n(hpr imported from {os.path.dirname(hpr.__file__)})")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """~90 KB of varied text in 10 files; doc6.txt (crc32 % 1000 = 12) is the validation split."""
    root = tmp_path_factory.mktemp("corpus")
    r = random.Random(0)
    words = ("the of and to in is that for it as with was on be by this are from at or an have not which "
             "but they all def return class import self None True").split()
    for name in [f"doc{i}.txt" for i in range(8)] + ["code.py", "notes/readme.md"]:
        path = root / name
        path.parent.mkdir(exist_ok=True)
        lines = [" ".join(r.choice(words) for _ in range(r.randint(3, 12))) + r.choice(".!?,;:")
                 for _ in range(150)]
        path.write_text("\n".join(lines))
    (root / "skipped.bin").write_bytes(bytes(range(256)))  # not a text suffix: ignored
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """os.environ for a subprocess, with its own corpus cache folder, HPR_TIMEOUT=30 (a broken
    collective fails the test instead of hanging it) and no .pyc files written."""
    cache = tmp_path_factory.mktemp("cache")
    return dict(os.environ, HPR_CACHE_DIR=str(cache), HPR_TIMEOUT="30", PYTHONDONTWRITEBYTECODE="1")
