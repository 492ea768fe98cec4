"""Whether a launcher started this process as one rank of several, read from the environment alone.

Kept apart from `distributed` (which needs torch.distributed) so that `embedstore encode` can ask without
importing torch: a re-run of a finished encode never loads it.
"""
from __future__ import annotations

import os

from embedstore.base.errors import ConfigError

#: What torchrun (or a hand-made launch) must set for a process to join a distributed encode.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_distributed() -> bool:
    """True when a launcher (torchrun or another) started this process as one of several ranks."""
    world = os.environ.get("WORLD_SIZE", "1")
    if not world.isdigit() or int(world) < 1:
        raise ConfigError(f"WORLD_SIZE: {world!r} in the environment; expected a positive integer")
    return int(world) > 1
