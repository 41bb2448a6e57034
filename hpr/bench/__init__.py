"""hpr's microbenchmarks: ``python -m hpr.bench <what>``. Every benchmark prints, beside each figure, a
reference measured in the same run (MPI's own collective, the same work done alone, ...) and the ratio.
These machines are noisy: read medians and ratios, not single times."""


def write_json(path, obj):
    """obj as JSON at path, written under a temporary name and renamed (never a half-written file)."""
    import json
    import os

    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)
