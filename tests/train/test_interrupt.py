"""SIGINT held over tensorboardX's writes (train/interrupt.deferred_sigint)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from peft_ray.train.interrupt import deferred_sigint


def test_a_sigint_inside_the_block_is_raised_as_it_ends():
    """A Ctrl-C'd --local run hung at exit: a KeyboardInterrupt inside tensorboardX's queue put cut
    Condition.notify midway and the writer thread never woke for the close."""
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_sigint():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)            # the handler has run by now: it only noted the signal
            reached.append("end of block")
    assert reached == ["end of block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_sigint_no_effect():
    with deferred_sigint():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
