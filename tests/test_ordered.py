"""The ordered merge (:mod:`actors.gateway.ordered`): pure code, no Ray.

Poll and deliver results of one room arrive in any interleaving; every entry must go
out once, in sequence order, and the state is resent only for a hole nothing can fill.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.gateway.ordered import OrderedMerge
from actors.wire import Delivery, OutboxEntry


def entry(seq: int) -> OutboxEntry:
    return OutboxEntry(seq=seq, to="all", data=str(seq))


def result(seqs: list[int], cursor: int | None = None, gap: bool = False) -> Delivery:
    return Delivery(cursor=cursor if cursor is not None else (seqs[-1] if seqs else 0),
                    entries=tuple(entry(s) for s in seqs), gap=gap)


def out(merged) -> list[int]:
    return [e.seq for e in merged.entries]


def test_the_first_result_sets_the_cursor_and_sends_nothing():
    merge = OrderedMerge()
    merged = merge.accept(result([3, 4], cursor=4), delivering=False)
    assert merged.started and out(merged) == [] and merge.cursor == 4


def test_entries_after_a_hole_wait_while_a_deliver_is_under_way():
    merge = OrderedMerge(cursor=5)
    assert out(merge.accept(result([7, 8]), delivering=True)) == []
    assert sorted(merge.held) == [7, 8]
    merged = merge.accept(result([6, 7, 8]), delivering=False)
    assert out(merged) == [6, 7, 8] and not merged.resend_state and merge.gaps == 0
    # repeats: nothing twice
    assert out(merge.accept(result([6, 7, 8]), delivering=False)) == []
    assert out(merge.accept(result([], cursor=8), delivering=False)) == []


def test_a_hole_nothing_can_fill_resends_the_state_then_the_held_entries():
    merge = OrderedMerge(cursor=5)
    merge.accept(result([7, 8]), delivering=True)
    merged = merge.accept(None, delivering=False)  # the deliver failed
    assert merged.resend_state and out(merged) == [7, 8] and merge.cursor == 8
    assert merge.gaps == 1


def test_a_gap_skips_forward_and_never_back():
    merge = OrderedMerge(cursor=10)
    merged = merge.accept(result(list(range(7, 13)), gap=True), delivering=False)
    assert merged.resend_state and out(merged) == [11, 12] and merge.cursor == 12
    # the room lost its outbox: follow its end, backwards
    merged = merge.accept(result([], cursor=3, gap=True), delivering=False)
    assert merged.resend_state and merge.cursor == 3
    assert out(merge.accept(result([4]), delivering=False)) == [4]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 40), st.integers(0, 6), st.booleans()),
                min_size=1, max_size=30))
def test_any_interleaving_sends_each_entry_once_and_in_order(results):
    """Results of random ranges of one outbox (1..46), with random holes, in any order,
    merged with or without a deliver under way: what goes out is strictly increasing
    (never twice, never back); a result merged with no deliver under way leaves nothing
    held; and with no resend of the state, nothing was skipped."""
    merge = OrderedMerge(cursor=0)
    sent: list[int] = []
    resent = False
    for start, length, delivering in results:
        seqs = [s for s in range(start, start + length) if (s * 7) % 5 != 0 or length < 3]
        merged = merge.accept(result(seqs, cursor=max(seqs, default=merge.cursor or 0)),
                              delivering)
        resent |= merged.resend_state
        sent += out(merged)
        if not delivering:
            assert merge.held == {}
    assert sent == sorted(set(sent)), "an entry went out twice or out of order"
    if not resent:
        assert sent == list(range(1, len(sent) + 1)), "entries skipped without a resend"
