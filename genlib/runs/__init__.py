"""The run folder, the protocol between the server and the workers: typed records, atomic writes, checkpoints, forks."""
