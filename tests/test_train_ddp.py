"""DistributedDataParallel on 2 CPU processes (gloo) through torchrun, the real launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_helpers import micro_config, weights

from gptforge.model.train import train

pytestmark = pytest.mark.slow


def test_two_gloo_processes_match_one_process_with_their_combined_batch(
    token_data: Path, tmp_path: Path
) -> None:
    tests = Path(__file__).parent
    env = os.environ | {"PYTHONPATH": f"{tests}{os.pathsep}{tests.parent}", "OMP_NUM_THREADS": "1"}
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(tests / "ddp_worker.py"),
            str(token_data),
            str(tmp_path / "ddp"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    single = train(micro_config(token_data, tmp_path / "single", max_steps=3, batch_size=4))
    a, b = weights(single.checkpoint), weights(tmp_path / "ddp/checkpoints/step_0000003")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
