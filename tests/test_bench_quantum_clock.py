"""hpr.bench quantum's --clock cpu counts the CPU time of every thread of the process: JAX's jitted
batch computes on threads of its own, and a clock of the calling thread alone timed it as ~0 s (a
"2.8 million circuits/s" reference). The work below runs on a worker thread while the caller waits."""
import threading
import time

from hpr.bench import quantum_suite


def _work_on_another_thread(seconds=0.05):
    def spin():
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            pass

    t = threading.Thread(target=spin)
    t.start()
    t.join()


def test_cpu_clock_sees_work_on_other_threads(monkeypatch):
    monkeypatch.setattr(quantum_suite, "_clock", quantum_suite.CLOCKS["cpu"])
    t = quantum_suite.median_time(_work_on_another_thread, budget=0.0, min_reps=3, max_reps=3)
    assert t > 0.025, f"--clock cpu timed 50 ms of another thread's work as {t * 1e3:.2f} ms"


def test_cpu_clock_is_the_flag():
    assert quantum_suite.parse(["--clock", "cpu"]).clock == "cpu"
    assert quantum_suite.CLOCKS["cpu"] is time.process_time
