"""The public API is fully typed: ``mypy --strict`` passes over the package and an example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def test_mypy_strict_passes_over_the_package_and_a_usage_example() -> None:
    """The package and ``typing_example.py`` type-check under --strict (py.typed shipped)."""
    pytest.importorskip("mypy")
    assert (PACKAGE_ROOT / "bittrade_feed_client" / "py.typed").exists()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "bittrade_feed_client",
            "tests/typing_example.py",
        ],
        cwd=PACKAGE_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
