"""Training schedules: multigrid long/short cycles, resumable samplers and split batch-norm."""
