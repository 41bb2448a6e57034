"""Pipeline schedules as data (hpr.parallel.schedule): order, memory bound, communication, and a
discrete-event simulation that checks dependencies and the bubble against theory."""
import pytest

from hpr.parallel.schedule import (Action, Step, bubble_fraction, format_schedule, gpipe,
                                   max_in_flight, one_f_one_b, simulate, steps)

GRID = [(pp, m) for pp in range(1, 6) for m in range(1, 10)]


def _parse(s):
    return [Action(t[0], int(t[1:])) for t in s.split()]


@pytest.mark.parametrize("schedule", [one_f_one_b, gpipe])
@pytest.mark.parametrize("pp,m", GRID)
def test_each_micro_once_in_order(schedule, pp, m):
    for s in range(pp):
        acts = schedule(pp, m, s)
        assert sorted((a.kind, a.micro) for a in acts) == sorted((k, i) for k in "FB" for i in range(m))
        pos = {(a.kind, a.micro): j for j, a in enumerate(acts)}
        assert all(pos[("F", i)] < pos[("B", i)] for i in range(m))
        assert [a.micro for a in acts if a.kind == "F"] == list(range(m))
        assert [a.micro for a in acts if a.kind == "B"] == list(range(m))


@pytest.mark.parametrize("pp,m", GRID)
def test_1f1b_warmup_and_memory(pp, m):
    for s in range(pp):
        acts = one_f_one_b(pp, m, s)
        warmup = min(pp - s - 1, m)
        assert all(a.kind == "F" for a in acts[:warmup])
        if warmup < m:                      # then the first backward comes right after one more F
            assert acts[warmup] == Action("F", warmup) and acts[warmup + 1] == Action("B", 0)
        assert max_in_flight(acts) == min(pp - s, m) <= pp - s
        assert max_in_flight(gpipe(pp, m, s)) == m


@pytest.mark.parametrize("pp,m", GRID)
def test_simulated_bubble_matches_theory(pp, m):
    f, b = 1.0, 2.0
    one = simulate(pp, m, one_f_one_b, f, b)
    gp = simulate(pp, m, gpipe, f, b)
    assert one.makespan == pytest.approx((m + pp - 1) * (f + b), rel=1e-12)
    assert one.bubble == pytest.approx(bubble_fraction(pp, m), rel=1e-12, abs=1e-15)
    assert 1 - m * (f + b) / one.makespan == pytest.approx(bubble_fraction(pp, m), rel=1e-12, abs=1e-15)
    assert gp.makespan >= one.makespan
    for s in range(pp):                     # one action at a time per stage, busy m*(f+b)
        st, en = one.start[s], one.end[s]
        assert all(en[j] <= st[j + 1] for j in range(len(st) - 1))
        assert sum(e - t for t, e in zip(st, en)) == pytest.approx(m * (f + b))


def test_simulate_other_costs_and_bubble_values():
    sim = simulate(4, 8, f_cost=1.0, b_cost=1.0)
    assert sim.makespan == pytest.approx(22.0) and sim.bubble == pytest.approx(3 / 11)
    assert bubble_fraction(1, 5) == 0.0 and bubble_fraction(4, 8) == pytest.approx(3 / 11)


def test_1f1b_pp4_m8_by_hand():
    assert one_f_one_b(4, 8, 0) == _parse("F0 F1 F2  F3 B0 F4 B1 F5 B2 F6 B3 F7 B4  B5 B6 B7")
    assert one_f_one_b(4, 8, 3) == _parse("F0 B0 F1 B1 F2 B2 F3 B3 F4 B4 F5 B5 F6 B6 F7 B7")
    assert one_f_one_b(4, 8, 1) == _parse("F0 F1  F2 B0 F3 B1 F4 B2 F5 B3 F6 B4 F7 B5  B6 B7")


def test_format_schedule_pp2_m3():
    assert format_schedule(2, 3) == "stage 0: F0 F1 B0 F2 B1 B2\nstage 1: F0 B0 F1 B1 F2 B2"
    assert format_schedule(2, 3, gpipe) == "stage 0: F0 F1 F2 B0 B1 B2\nstage 1: F0 F1 F2 B0 B1 B2"


def test_steps_ends_and_middle():
    first = steps(3, 2, 0)                  # 1F1B stage 0 of 3, m=2: F0 F1 B0 B1
    assert first == [Step("compute", "F", 0), Step("send", "F", 0, 1),
                     Step("compute", "F", 1), Step("send", "F", 1, 1),
                     Step("recv", "B", 0, 1), Step("compute", "B", 0),
                     Step("recv", "B", 1, 1), Step("compute", "B", 1)]
    last = steps(3, 2, 2)                   # F0 B0 F1 B1
    assert last == [Step("recv", "F", 0, 1), Step("compute", "F", 0),
                    Step("compute", "B", 0), Step("send", "B", 0, 1),
                    Step("recv", "F", 1, 1), Step("compute", "F", 1),
                    Step("compute", "B", 1), Step("send", "B", 1, 1)]
    mid = steps(3, 2, 1)                    # F0 F1 B0 B1
    assert [str(st) for st in mid[:3]] == ["recv act0 <- 0", "F0", "send act0 -> 2"]
    assert [str(st) for st in mid[6:9]] == ["recv grad0 <- 2", "B0", "send grad0 -> 0"]
    assert steps(1, 2, 0) == [Step("compute", k, i) for k, i in (("F", 0), ("B", 0), ("F", 1), ("B", 1))]


@pytest.mark.parametrize("pp,m", GRID)
def test_steps_peers_in_range(pp, m):
    for s in range(pp):
        prog = steps(pp, m, s)
        assert [(x.kind, x.micro) for x in prog if x.op == "compute"] == \
            [(a.kind, a.micro) for a in one_f_one_b(pp, m, s)]
        for x in prog:
            if x.op == "compute":
                assert x.peer is None
            else:
                assert 0 <= x.peer < pp and abs(x.peer - s) == 1
                downstream = (x.kind == "F") == (x.op == "send")
                assert x.peer == (s + 1 if downstream else s - 1)


def test_simulate_detects_deadlock_and_malformed():
    def bad(pp, m, stage):                  # last stage runs B0 first: needs F0 on itself -> stuck
        return [Action("B", 0), Action("F", 0)] if stage == pp - 1 else one_f_one_b(pp, m, stage)

    with pytest.raises(ValueError, match="deadlock"):
        simulate(2, 1, bad)

    def cross(pp, m, stage):                # stage 0 waits on stage 1's B0, which waits on stage 0's F1
        return _parse("F0 B0 F1 B1") if stage == 0 else _parse("F0 F1 B0 B1")

    with pytest.raises(ValueError, match="deadlock"):
        simulate(2, 2, cross)

    with pytest.raises(ValueError, match="exactly once"):
        simulate(2, 2, lambda pp, m, s: _parse("F0 B0 F1"))


@pytest.mark.parametrize("args", [(0, 1, 0), (1, 0, 0), (2, 2, 2), (2, 2, -1), (2.0, 2, 0),
                                  (True, 2, 0), (2, "3", 0)])
def test_bad_arguments(args):
    for fn in (one_f_one_b, gpipe, steps):
        with pytest.raises(ValueError, match="must be"):
            fn(*args)


def test_bad_arguments_other_entry_points():
    with pytest.raises(ValueError, match="pp"):
        bubble_fraction(0, 4)
    with pytest.raises(ValueError, match="m \\(micro"):
        format_schedule(2, 0)
    with pytest.raises(ValueError, match="f_cost"):
        simulate(2, 2, f_cost=0.0)
