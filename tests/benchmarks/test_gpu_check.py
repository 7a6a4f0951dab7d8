"""`make gpu-check` without CUDA: one line, exit status 0, nothing written."""

import os
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import REPO_ROOT


def test_without_cuda_one_line_and_nothing_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--json", str(path)]) == 0
    assert capsys.readouterr().out == gpu_check.NO_CUDA + "\n"
    assert not path.exists()


@pytest.mark.slow  # starts a process
def test_the_command_without_cuda_prints_one_line(tmp_path):
    path = tmp_path / "gpu_check.json"
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--json", str(path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [gpu_check.NO_CUDA]
    assert not path.exists()


def test_the_cuda_tests_are_found():
    assert {"tests/modules/test_group_linear.py", "tests/modules/test_define_embedding.py"} <= set(
        gpu_check.cuda_test_files())
