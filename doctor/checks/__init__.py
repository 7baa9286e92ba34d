"""The doctor's checks, by section, in the order they run and print."""

from .disk import DISK_CHECKS
from .gpu import GPU_CHECKS
from .power import POWER_CHECKS
from .software import BOARD_CHECKS, SOFTWARE_CHECKS

SECTIONS = [
    ("board", BOARD_CHECKS),
    ("software", SOFTWARE_CHECKS),
    ("gpu", GPU_CHECKS),
    ("power", POWER_CHECKS),
    ("disk", DISK_CHECKS),
]

__all__ = ["SECTIONS"]
