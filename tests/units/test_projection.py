"""Tests for bench.projection: the split of the cores between the roles that carries most."""

from __future__ import annotations

import pytest

from bench.projection import best_split, split_projection


def test_server_only_split_balances_fronts_and_workers() -> None:
    # A front carries 1 GB/s, a worker 1/3 GB/s: 2 fronts + 6 workers carry 2 GB/s, where
    # 1 + 7 carries 1 (front-bound) and 3 + 5 carries 5/3 (worker-bound).
    row = best_split(8, 1.0, 3.0)
    assert (row["fronts"], row["workers"], row["clients"]) == (2, 6, 0)
    assert row["gb_per_s"] == pytest.approx(2.0)
    assert row["bound"] == "workers"  # a tie goes to the workers


def test_every_split_is_tried() -> None:
    for cores in (4, 8, 16, 33):
        row = best_split(cores, 0.7, 5.0)
        best = max(min(f / 0.7, (cores - f) / 5.0) for f in range(1, cores))
        assert row["gb_per_s"] == pytest.approx(best)
        assert row["fronts"] + row["workers"] == cores


def test_a_cheap_front_leaves_the_cores_to_the_workers() -> None:
    row = best_split(16, 0.1, 4.0)
    assert (row["fronts"], row["workers"]) == (1, 15)
    assert row["bound"] == "workers"


def test_front_bound_when_the_front_costs_more_than_a_worker() -> None:
    row = best_split(4, 3.0, 1.0)  # any split: the fronts carry least
    assert row["bound"] in ("front", "workers")
    assert row["gb_per_s"] == pytest.approx(max(min(f / 3.0, (4 - f) / 1.0) for f in (1, 2, 3)))


def test_with_clients_on_the_host() -> None:
    # Costs 1 (front), 4 (workers), 2 (client): 1 + 4 + 2 of 7 cores carry 1 GB/s each role.
    row = best_split(7, 1.0, 4.0, 2.0, with_clients=True)
    assert (row["fronts"], row["workers"], row["clients"]) == (1, 4, 2)
    assert row["gb_per_s"] == pytest.approx(1.0)
    expensive_client = best_split(8, 0.5, 2.0, 20.0, with_clients=True)
    assert expensive_client["bound"] == "client"
    assert expensive_client["clients"] == 8 - 2  # every spare core goes to the clients
    assert expensive_client["gb_per_s"] == pytest.approx(6 / 20.0)


def test_unknown_and_free_costs() -> None:
    assert best_split(8, None, 3.0)["gb_per_s"] is None
    assert best_split(8, 1.0, 3.0, None, with_clients=True)["gb_per_s"] is None
    assert best_split(8, 0.0, 0.0)["gb_per_s"] is None  # nothing limits: no figure
    free_front = best_split(4, 0.0, 2.0)
    assert (free_front["fronts"], free_front["workers"]) == (1, 3)
    assert free_front["gb_per_s"] == pytest.approx(1.5)
    with pytest.raises(ValueError):
        best_split(2, 1.0, 1.0, 1.0, with_clients=True)


def test_projection_scales_with_more_fronts() -> None:
    # The measurement: front 3.96, workers 12.71 s/GB. One front is flat from 8 cores;
    # the best split keeps about one front per 4 cores and grows with them.
    rows = split_projection(3.96, 12.71)
    by = {row["cores"]: row for row in rows}
    assert by[64]["gb_per_s"] / by[8]["gb_per_s"] >= 6
    assert by[64]["fronts"] > 1
