#!/usr/bin/env python3
"""Run sushy-emulator with its fake driver's power-change delay pinned.

The stock fake driver applies a power change 1 to 11 seconds after the
request, at random. Tests want realistic but short, predictable delays:
RIVET_FAKE_POWER_DELAY=K makes every change apply within K seconds.
"""
import os
import random
import sys

from sushy_tools.emulator.resources.systems import fakedriver

delay = int(os.environ.get("RIVET_FAKE_POWER_DELAY", "1"))


class _PinnedRandom:
    @staticmethod
    def randint(_low, _high):
        return random.randint(delay, delay)


fakedriver.random = _PinnedRandom

from sushy_tools.emulator.main import main  # noqa: E402

sys.exit(main())
