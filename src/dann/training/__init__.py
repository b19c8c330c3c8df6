"""The training loop and what it stands on: one step (``steps``), mixed precision (``precision``), the non-finite
guard (``nonfinite``), several processes (``distributed``), schedules, event logs, and the throughput bench."""
