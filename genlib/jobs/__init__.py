"""Background jobs: the manager and its launchers, the worker that trains one run folder, the standby, the memory budget."""
