"""An instance deleted while the API reads it is answered as gone, never as a 500.

The API reads an instance and then its deployments in two statements. On PostgreSQL (read
committed) the controller can finish a delete between them, which once made a GET answer 500
("an instance always has a live or a pending deployment") in the concurrency tests. Here the
delete is put exactly between the two reads.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferd.api.service import view_of, views_of
from inferd.domain.errors import NotFound
from inferd.store.replicas import remove_instance
from inferd.store.tables import InstanceRow
from tests.conftest import database_url, migrated_database
from tests.support.rows import new_instance


@pytest.mark.postgres
def test_an_instance_deleted_between_the_two_reads_is_not_found(tmp_path: Path) -> None:
    with database_url("postgres", tmp_path) as url, migrated_database(url) as database:
        gone, kept = new_instance(database), new_instance(database)
        with database.session() as api:
            rows = [api.get(InstanceRow, gone), api.get(InstanceRow, kept)]  # the API's first read
            with database.session() as controller:  # the controller finishes the delete, commits
                remove_instance(controller, controller.get(InstanceRow, gone))
            with pytest.raises(NotFound):
                view_of(api, rows[0])
            assert [view.instance.id for view in views_of(api, rows)] == [kept]
            assert view_of(api, rows[1]).pending is not None
