"""The GAN explorer's latent-point grids made one slider step ahead (dashboard.explore.gan_grids.GridAhead, neighbours):
which positions are queued, that a queued grid is served without being made again, and that the grid served is the
one the generator makes for those slider positions."""

from __future__ import annotations

import threading

import pytest
import torch

from dashboard.explore import gan_grids


def test_neighbours_put_the_last_moves_direction_first_and_stay_in_range():
    assert gan_grids.AHEAD == 2  # the first two of these are made ahead
    assert gan_grids.neighbours(1.0, 1.0, None) == [(1.5, 1.0), (0.5, 1.0), (1.0, 1.5), (1.0, 0.5)]
    # the hand moved the means right: two steps further right first, then the rest
    assert gan_grids.neighbours(1.5, 1.0, (1.0, 1.0)) == [(2.0, 1.0), (2.5, 1.0), (1.0, 1.0), (1.5, 1.5), (1.5, 0.5)]
    assert gan_grids.neighbours(10.0, 0.0, (9.5, 0.0)) == [(9.5, 0.0), (10.0, 0.5)]  # the sliders' ends


def test_a_grid_made_ahead_is_served_without_making_it_again():
    ahead = gan_grids.GridAhead()
    calls = []
    release = threading.Event()

    def make(name):
        def run():
            calls.append(name)
            release.wait(10)
            return name.encode()
        return run

    ahead.ahead([(("v", 4, 1.5, 1.0, 0), make("right")), (("v", 4, 0.5, 1.0, 0), make("left"))])
    release.set()
    # asked while (or after) it is made: the same bytes, made once
    assert ahead.get(("v", 4, 1.5, 1.0, 0), make("again")) == b"right"
    assert calls.count("again") == 0 and calls.count("right") == 1
    assert ahead.get(("v", 4, 9.0, 9.0, 0), make("new")) == b"new" and ahead.cached(("v", 4, 9.0, 9.0, 0))


def test_queued_grids_a_newer_move_overtakes_are_dropped_unmade():
    ahead = gan_grids.GridAhead()
    gate, made = threading.Event(), []

    def slow():
        gate.wait(10)
        made.append("first")
        return b"first"

    def never():
        made.append("stale")
        return b"stale"

    ahead.ahead([(("v", 1, 0.0, 0.0, 0), slow), (("v", 1, 0.5, 0.0, 0), never)])  # the second waits in the queue
    ahead.ahead([(("v", 1, 3.0, 0.0, 0), lambda: b"newer")])  # the hand moved on
    gate.set()
    assert ahead.get(("v", 1, 3.0, 0.0, 0), lambda: b"made-now") in (b"newer", b"made-now")
    assert "stale" not in made
    assert ahead.get(("v", 1, 0.5, 0.0, 0), lambda: b"asked") == b"asked"  # dropped, so made when asked


def test_the_grid_served_is_the_generators_at_those_positions():
    from genlib.models import build_model

    torch.manual_seed(0)
    model = build_model("gan", {"preset": "fast"}).eval()
    ahead = gan_grids.GridAhead()
    ahead.ahead([(("m", 16, m, 1.0, 3), (lambda m=m: gan_grids.latent_grid(model, 16, m, 1.0, 3))) for m in (1.5, 2.0)])
    for m in (1.5, 2.0):
        made = ahead.get(("m", 16, m, 1.0, 3), lambda: pytest.fail("made again"))
        assert made == gan_grids.latent_grid(model, 16, m, 1.0, 3)
