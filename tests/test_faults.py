"""hpr.faults alone: the HPR_FAULT grammar (rules, steps, step ranges, ranks) and its errors. The faults
fired inside real training jobs, and what the trainer does about them, are test_train_failures.py's."""
import pytest

from hpr import ConfigError
from hpr.faults import Faults


def test_fault_spec_grammar():
    f = Faults("nan_grad@step=3,rank=1; kill@step=5+", rank=1)
    assert [f.at(s) for s in (2, 3, 4, 5, 9)] == [set(), {"nan_grad"}, set(), {"kill"}, {"kill"}]
    assert Faults("nan_grad@step=3,rank=1", rank=0).at(3) == set()
    for bad in ("explode@step=1", "kill", "kill@rank=1", "kill@step=x", "kill@step=1,when=now"):
        with pytest.raises(ConfigError, match="HPR_FAULT="):
            Faults(bad, rank=0)
