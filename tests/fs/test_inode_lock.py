"""InodeLock: mutual exclusion, FIFO hand-over, cancellation while waiting."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from shadowfs.inode_lock import InodeLock


async def test_excludes_and_hands_over_in_arrival_order() -> None:
    lock = InodeLock()
    order: list[str] = []
    inside = 0

    async def user(name: str, delay: float) -> None:
        nonlocal inside
        await trio.sleep(delay)
        async with lock:
            inside += 1
            assert inside == 1, "two tasks held the lock at once"
            order.append(name)
            await trio.sleep(0.05)
            inside -= 1

    async with trio.open_nursery() as nursery:
        for i, name in enumerate("abcd"):
            nursery.start_soon(user, name, i * 0.01)
    assert order == list("abcd")
    assert not lock.locked()


async def test_a_waiter_is_not_starved_by_later_arrivals() -> None:
    """A truncate queued behind one write runs before writes that arrive after it, even
    though each of those would find the lock free for an instant between hand-overs."""
    lock = InodeLock()
    ran: list[str] = []

    async def writer(i: int) -> None:
        await trio.sleep(0.01 * i)
        async with lock:
            ran.append(f"w{i}")
            await trio.sleep(0.05)

    async def truncate() -> None:
        await trio.sleep(0.005)
        async with lock:
            ran.append("t")

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(writer, i)
        nursery.start_soon(truncate)
    assert ran.index("t") == 1


async def test_release_hands_the_lock_to_the_waiter_before_it_runs() -> None:
    lock = InodeLock()
    await lock.acquire()
    got = trio.Event()

    async def waiter() -> None:
        await lock.acquire()
        got.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        lock.release()
        # The waiter has not run yet, and still nobody else can take the lock.
        assert lock.locked()
        assert not lock.try_acquire()
        await got.wait()
    lock.release()
    assert not lock.locked()


async def test_cancel_while_waiting_leaves_the_queue() -> None:
    lock = InodeLock()
    await lock.acquire()
    with trio.move_on_after(0.1) as scope:
        await lock.acquire()
    assert scope.cancelled_caught
    lock.release()
    assert not lock.locked()  # nobody was handed the lock
    assert lock.try_acquire()
    lock.release()


async def test_free_acquire_is_not_a_scheduling_point() -> None:
    lock = InodeLock()
    assert lock.try_acquire()
    assert not lock.try_acquire()
    lock.release()
    with trio.testing.assert_no_checkpoints():
        await lock.acquire()
    lock.release()


def test_release_of_a_free_lock_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not held"):
        InodeLock().release()
