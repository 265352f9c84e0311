"""Two writers racing on the same (app id, batch), for both Delta writers: one set of rows.

The app transaction's check and the commit use one snapshot (delta-rs) or Delta's own
transaction (Spark), so a racer's commit in between fails the other, which then reports a skip.
Each writer's return value must say truthfully whether its rows are the ones committed: a
wrong answer would make the stream count (and report) a batch it did not write.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from bench.delta_commit import sample_predictions
from fruits.sinks.delta import Lake, Txn
from fruits.sinks.delta_rs import DeltaRsLake
from fruits.sinks.delta_spark import SparkDeltaLake
from fruits.sinks.tables import PREDICTIONS

# Rounds per writer: delta-rs commits in milliseconds; Spark's commits take seconds here.
ROUNDS = {"deltars": 25, "spark": 5}


def _lakes(request: pytest.FixtureRequest, writer: str, root: str) -> tuple[Lake, Lake]:
    """Two lakes on one folder: two writers, as two processes would be."""
    if writer == "spark":
        spark = request.getfixturevalue("spark")
        return SparkDeltaLake(root, spark), SparkDeltaLake(root, spark)
    return DeltaRsLake(root), DeltaRsLake(root)


def _race(lakes: tuple[Lake, Lake], batch: int) -> dict[int, bool]:
    """Both writers append their own rows as ``Txn("racing-query", batch)`` at once; what
    each one answered."""
    barrier = threading.Barrier(2)
    answers: dict[int, bool] = {}
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        rows = sample_predictions([f"w{writer}/{batch}-{i}.jpg" for i in range(3)], batch)
        barrier.wait()  # both check the app transaction at about the same moment
        try:
            answers[writer] = lakes[writer].append_arrow(
                rows, PREDICTIONS, txn=Txn("racing-query", batch)
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    return answers


def test_two_writers_racing_on_one_batch_commit_one_set_of_rows_and_say_which(
    request: pytest.FixtureRequest, delta_writer: str, tmp_path: Path
) -> None:
    lakes = _lakes(request, delta_writer, str(tmp_path / "lake"))
    lakes[0].append_arrow(sample_predictions(["setup.jpg"], -1), PREDICTIONS)  # the table exists

    said = [_race(lakes, batch) for batch in range(ROUNDS[delta_writer])]

    rows = lakes[0].read_arrow(PREDICTIONS, columns=["path", "batch_id"]).to_pylist()
    per_batch = Counter(row["batch_id"] for row in rows)
    writers = {(row["batch_id"], row["path"].split("/")[0]) for row in rows}
    for batch, answers in enumerate(said):
        assert sorted(answers.values()) == [False, True], (batch, answers)  # one wrote
        (winner,) = [w for w, wrote in answers.items() if wrote]
        assert per_batch[batch] == 3  # one set of rows, never two
        assert {w for b, w in writers if b == batch} == {f"w{winner}"}  # the one that said so


def test_two_delta_rs_writers_racing_to_create_the_table_commit_one_set_of_rows(
    tmp_path: Path,
) -> None:
    # The table is created in a commit of its own, then the rows are appended on a snapshot:
    # a creation carrying the rows would be rebased over the racer's without a txn check.
    for round_ in range(15):
        root = str(tmp_path / f"lake{round_}")
        answers = _race((DeltaRsLake(root), DeltaRsLake(root)), 0)
        assert sorted(answers.values()) == [False, True], (round_, answers)
        assert DeltaRsLake(root).read_arrow(PREDICTIONS).num_rows == 3
