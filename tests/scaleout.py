"""Run the test suite on the scale-out setup: a throwaway PostgreSQL cluster and Redis
server on free loopback ports (DATABASE_URL, REDIS_URL), removed afterwards.

    python -m tests.scaleout [pytest arguments]
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support.databases import Postgres, Redis
from tests.support.processes import ROOT


def main(argv: list[str]) -> int:
    base = Path(tempfile.mkdtemp(prefix="pa-scaleout-"))
    base.chmod(0o755)
    postgres = redis = None
    try:
        postgres = Postgres(base / "postgres")
        redis = Redis(base / "redis")
        env = dict(os.environ, DATABASE_URL=postgres.url(), REDIS_URL=redis.url)
        print(f"scale-out suite: PostgreSQL on 127.0.0.1:{postgres.port}, Redis on 127.0.0.1:{redis.port}", flush=True)
        return subprocess.run([sys.executable, "-m", "pytest", *argv], cwd=ROOT, env=env).returncode
    finally:
        if redis is not None:
            redis.stop()
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
