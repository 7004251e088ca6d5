"""`make bench`: the operator and the exporter, measured as ratios taken in one run."""
