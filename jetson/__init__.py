"""yolo_nano.jetson: board control any app can use. Needs core only.

- :mod:`.nvpmodel`: the conf parser (modes, budgets, reboot-gated switches) and the ``nvpmodel`` tool;
- :mod:`.clocks`: ``jetson_clocks`` store/pin/restore, GPU/CPU frequencies, temperatures, throttling;
- :mod:`.power`: module power from the INA3221 rails, jtop or RAPL, integrated over a window;
- :mod:`.board`: board and host identity (model, L4T release, CPU, TensorRT);
- :mod:`.control`: ``with power_mode("15W"):`` and :class:`BoardControl`, which always restore, one run
  per board (:mod:`.lock`), and :func:`recover` after a run that was killed (:mod:`.recovery`);
- :mod:`.operating_point`: ``with operating_point("operating-point.json"):`` runs at the point
  ``nano-bench --choose`` picked, after checking it was chosen on this board, conf and model.
"""

from .clocks import ClocksPinnedError
from .control import BoardControl, BoardInterrupted, power_mode
from .lock import BoardBusyError, BoardStateError
from .operating_point import OperatingPointError, OperatingPointMismatch, operating_point
from .recovery import BoardRestoreError, recover

__all__ = [
    "BoardBusyError",
    "BoardControl",
    "BoardInterrupted",
    "BoardRestoreError",
    "BoardStateError",
    "ClocksPinnedError",
    "OperatingPointError",
    "OperatingPointMismatch",
    "operating_point",
    "power_mode",
    "recover",
]
