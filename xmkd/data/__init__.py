"""Datasets: the `Frame` data contract, label spaces, readers and the synthetic world."""
