"""--hang-timeout and --first-step-timeout: how long a rank may go without a training step.

Part of the job's spec (the plan sets the platform's own timeouts from it, see
platform_timeouts.py); the watchdog that applies it is launcher/run/watchdog.py.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

# Generous defaults: a MindSpore graph compile of a big net takes minutes on a slow host,
# and a step of a big net on a CPU can take a minute; a real hang lasts forever.
DEFAULT_HANG_TIMEOUT_S = 1800.0
DEFAULT_FIRST_STEP_TIMEOUT_S = 3600.0
MAX_TIMEOUT_S = 30 * 24 * 3600.0


def check_timeout(value: Optional[float], flag: str) -> Optional[float]:
    """None or 0 turn the check off; else a finite number of seconds in (0, 30 days]."""
    if value is None or value == 0:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value) or not 0 < value <= MAX_TIMEOUT_S:
        raise ValueError(f"{flag} {value}: must be a number of seconds between 0 (off) and {MAX_TIMEOUT_S:.0f}")
    return float(value)


@dataclass(frozen=True)
class HangPolicy:
    hang_timeout_s: Optional[float] = DEFAULT_HANG_TIMEOUT_S
    first_step_timeout_s: Optional[float] = DEFAULT_FIRST_STEP_TIMEOUT_S

    def __post_init__(self) -> None:
        object.__setattr__(self, "hang_timeout_s", check_timeout(self.hang_timeout_s, "--hang-timeout"))
        object.__setattr__(self, "first_step_timeout_s", check_timeout(self.first_step_timeout_s, "--first-step-timeout"))

    @property
    def enabled(self) -> bool:
        return self.hang_timeout_s is not None or self.first_step_timeout_s is not None
