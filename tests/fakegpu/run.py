"""Run a module or a script with the fake CuPy of this folder and hpr's GPU launchers routed to the CPU
kernels (route.py), e.g. under MPI:

    mpiexec -n 2 python tests/fakegpu/run.py -m hpr.train --device gpu ...
    python tests/fakegpu/run.py script.py args...

tests/fakegpu goes first on sys.path; the module or script then runs as __main__ with sys.argv as it
would have under `python -m module args` / `python script.py args`. FAKECUPY_DEVICES sets the number
of fake devices (default 1), FAKECUPY_POISON=0 stops NaN-filling new uninitialised float arrays."""
import os
import runpy
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        sys.exit(__doc__)
    if sys.path[0] != HERE:
        sys.path.insert(0, HERE)
    import route

    route.route_kernels()
    if argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]  # run_module sets argv[0] to the module's file
        sys.path.insert(1, os.getcwd())  # as `python -m` does
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(1, os.path.dirname(os.path.abspath(argv[0])))  # as `python script.py` does
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
