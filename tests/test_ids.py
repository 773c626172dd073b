"""Decision ids are UUIDv7 and strictly increasing within a process."""

from __future__ import annotations

import threading
import uuid

from hypothesis import given
from hypothesis import strategies as st

from warden.ids import new_id, uuid_text


def test_ids_are_version_7_and_strictly_increasing() -> None:
    ids = [new_id() for _ in range(20_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122


def test_ids_from_many_threads_are_unique() -> None:
    seen: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        mine = [new_id() for _ in range(2000)]
        assert mine == sorted(mine)
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == len(seen) == 16_000


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_an_id_is_written_as_the_standard_library_writes_a_uuid(value: int) -> None:
    assert uuid_text(value) == str(uuid.UUID(int=value))
