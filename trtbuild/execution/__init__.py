"""Execution: the runner, the Executor seam, the local worker pool and workers, the Ray farm, repro scripts."""
