"""The client package (client/) in a virtual environment of its own, without Django: as
`pip install ./client` leaves it on a deploy host, built offline in well under a second.

`python -m venv --without-pip`; a .pth file puts client/src and `requests` with its
dependencies (links to this environment's copies) on its path; `bin/powerautomation` is the
console script pip would write from the entry point in client/pyproject.toml."""

import importlib
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import ROOT

CLIENT = ROOT / "client"
# requests and what it needs (client/pyproject.toml: requests is the only dependency).
DEPENDENCIES = ("requests", "urllib3", "idna", "certifi", "charset_normalizer")


@dataclass
class ClientVenv:
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def command(self) -> Path:
        return self.root / "bin" / "powerautomation"


def _site_packages(venv: Path) -> Path:
    (path,) = (venv / "lib").glob("python3*/site-packages")
    return path


def make_client_venv(base: Path) -> ClientVenv:
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    deps = base / "deps"
    deps.mkdir()
    for name in DEPENDENCIES:
        package = Path(importlib.import_module(name).__file__).parent
        (deps / name).symlink_to(package, target_is_directory=True)
    (_site_packages(venv) / "powerautomation_client.pth").write_text(f"{CLIENT / 'src'}\n{deps}\n")
    module, _, function = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]["scripts"][
        "powerautomation"
    ].partition(":")
    script = venv / "bin" / "powerautomation"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
    )
    script.chmod(0o755)
    return ClientVenv(venv)
