"""Herald's benchmark against the real API server; `python bench/run.py --help`."""
