"""Schemathesis against meterd's own OpenAPI document: every operation, fuzzed and stateful phases, with a
fixed seed. No input may make the server answer 5xx."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.slow
EXAMPLES = 25


def test_no_operation_answers_5xx(tmp_path: Path) -> None:
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None, "schemathesis is a test dependency"
    server = Server(tmp_path / "data").start()
    try:
        done = subprocess.run(
            [
                st,
                "run",
                f"{server.url}/api/v1/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                "1",
                "--workers",
                "2",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    finally:
        server.stop()
    summary = done.stdout[-3000:]
    assert done.returncode == 0, f"schemathesis found failures:\n{summary}\n{server.log()[-3000:]}"
    assert "Tested:" in summary, summary
