"""The whole test suite in one command: the single-process tests under pytest, then the MPI tests under
``mpiexec -n N`` for N = 2, 3, 4 and 8 (rank 0's report shown, the other ranks' kept in
tests/mpi/logs/), then at 4 ranks the collectives and data-parallel parity over TCP (MPICH told every
rank is its own node; once more with two hpr "nodes" of two). Fails when any run fails on any rank, or outlives its time limit.

Usage: ``python tests/run_all.py [--ranks 2,3,4,8] [--single-only] [--mpi-only] [--no-transport]``"""
import argparse
import os
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET

from launch import NO_MPIEXEC, find_mpiexec, run_tree  # tests/ is on sys.path: this script's folder

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, env, limit):
    """Run cmd in its own session; kill the whole tree if it outlives limit seconds."""
    r = run_tree(cmd, limit, cwd=HERE, env=env)
    code = r.code
    if r.timed_out:
        print(f"\n*** {' '.join(cmd[:4])} ... outlived its {limit} s limit and was killed", flush=True)
        code = 124
    print(f"--- {r.seconds:.1f} s, exit code {code}\n", flush=True)
    return code


def counts(xml_path):
    """(passed, failed, skipped) from a junit XML file, or None if it was not written."""
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError):
        return None
    suites = [root] if root.tag == "testsuite" else list(root)
    t = f = s = 0
    for su in suites:
        t += int(su.get("tests", 0))
        f += int(su.get("failures", 0)) + int(su.get("errors", 0))
        s += int(su.get("skipped", 0))
    return t - f - s, f, s


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", default="2,3,4,8", help="rank counts for the MPI tests (default 2,3,4,8)")
    ap.add_argument("--single-only", action="store_true", help="only the single-process tests")
    ap.add_argument("--no-transport", action="store_true",
                    help="skip the two runs over TCP (MPIR_CVAR_NOLOCAL=1, with and without HPR_NODE_SIZE=2)")
    ap.add_argument("--mpi-only", action="store_true", help="only the MPI tests")
    args = ap.parse_args()
    env = dict(os.environ)
    env.setdefault("HPR_TIMEOUT", "60")  # a broken collective fails a test instead of hanging the suite
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    tmp = tempfile.mkdtemp(prefix="hpr-tests-")
    results = []  # (name, exit code, counts)
    if not args.mpi_only:
        print("=== single-process tests (pytest)", flush=True)
        xml = os.path.join(tmp, "single.xml")
        code = run([sys.executable, "-m", "pytest", HERE, "--ignore", os.path.join(HERE, "mpi"), "-q",
                    "-p", "no:cacheprovider", f"--junitxml={xml}"], env, 900)
        results.append(("single-process", code, counts(xml)))
    if not args.single_only:
        launcher = find_mpiexec() or sys.exit(NO_MPIEXEC)
        for n in [int(v) for v in args.ranks.split(",") if v.strip()]:
            print(f"=== MPI tests: mpiexec -n {n}", flush=True)
            xml = os.path.join(tmp, f"mpi{n}.xml")
            code = run([launcher, "-n", str(n), sys.executable, os.path.join(HERE, "mpi", "run_ranks.py"),
                        f"--junitxml={xml}"], env, 480 if n <= 4 else 720)
            results.append((f"mpiexec -n {n}", code, counts(xml)))
        if not args.no_transport:
            # Traffic between ranks over MPICH's network module (TCP on loopback), as between nodes:
            # MPIR_CVAR_NOLOCAL=1 makes every rank its own node to MPICH; with HPR_NODE_SIZE=2 hpr also
            # sees two "nodes" of two whose shared window cannot be made (it falls back to point-to-point).
            # The collectives on the world communicator against MPI's own, and data-parallel training
            # against one process.
            for name, extra in (("tcp", {}), ("tcp, 2 nodes", {"HPR_NODE_SIZE": "2"})):
                print(f"=== MPI tests over TCP ({name}): mpiexec -n 4", flush=True)
                xml = os.path.join(tmp, f"tcp{len(extra)}.xml")
                code = run([launcher, "-n", "4", sys.executable, os.path.join(HERE, "mpi", "run_ranks.py"),
                            "-k", "(test_collectives and world) or dp_equals_single_process", f"--junitxml={xml}"],
                           dict(env, MPIR_CVAR_NOLOCAL="1", **extra), 480)
                results.append((name, code, counts(xml)))
    passed = failed = skipped = 0
    print("=== summary")
    for name, code, c in results:
        p, f, s = c if c else (0, 0, 0)
        if code != 0 and f == 0:
            f = 1  # the run failed without a test failing (a crash, a timeout, a failure on another rank)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        print(f"  {name:<16} {'ok' if code == 0 else 'FAILED (exit ' + str(code) + ')'}: "
              f"{p} passed, {f} failed, {s} skipped")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"total: {passed} passed, {failed} failed, {skipped} skipped")
    return 0 if failed == 0 and all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
