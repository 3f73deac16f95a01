"""Shared by the FSDP2 trainer tests: run a worker on 2 forked gloo processes on this CPU.

Loaded by file path (the tests run in importlib mode without a package), e.g.
`spec_from_file_location("k2_dit_tests_gloo_launch_a", Path(__file__).with_name(...))`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp


def launch_two(
    worker: Callable[..., None], out: Path, runs: list[Any], *, timeout: float = 240.0
) -> None:
    """Call `worker(rank, port, str(out), runs)` on ranks 0 and 1; fail the test past `timeout`."""
    # Imported once here so the forked workers do not each pay for them (lazy torch._dynamo
    # import inside fully_shard, transformers inside wsd_schedule).
    import torch._dynamo  # noqa: F401
    from transformers import get_wsd_schedule  # noqa: F401

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers inherit the imported modules instead of re-importing torch.
    ctx = mp.start_processes(
        worker, args=(port, str(out), runs), nprocs=2, start_method="fork", join=False
    )
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the 2-process FSDP2 run did not finish within {timeout:.0f} s")
