"""Helpers that start real services on loopback for the tests and the benchmark, one module
per concern (the facts behind them: the team's TESTING-REAL-SERVICES.md):

- `ports`: free loopback ports, waiting for one to listen
- `processes`: the project folder, `manage.py` and its environment, qcluster and gunicorn
  processes, stopping processes, waiting for a condition, threads with their own DB connection
- `sshd`: a throwaway OpenSSH server and its keys
- `http`: a scripted loopback HTTP server, and a port that never answers
- `databases`: throwaway PostgreSQL and Redis servers
- `agent`: the local agent as a real process, its callback receiver and an HTTP client
- `moto`: the EC2 emulator (moto in server mode)

Rows, users and API clients for tests are made in `tests.factories`.
"""
