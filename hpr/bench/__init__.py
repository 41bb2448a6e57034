"""hpr's microbenchmarks: ``python -m hpr.bench <what>``. Every benchmark prints, beside each figure, a
reference measured in the same run (MPI's own collective, the same work done alone, ...) and the ratio.
These machines are noisy: read medians and ratios, not single times."""
