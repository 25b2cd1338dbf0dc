"""What `python -m benchmarks` runs besides a benchmark: sweeps, the real-data tier, the dry run, the
reference runs, the protocol comparison, the GPU check, the demo, and the tables (`collect`)."""
