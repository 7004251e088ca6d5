"""`make demo`: servedmodel end to end on the local control plane."""
