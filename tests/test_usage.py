"""proxy.core.usage: the ledger of which cassettes a test run used, merged across workers."""

from __future__ import annotations

from proxy.core.usage import CassetteUse, Unplayed, Usage


def test_claimed_served_unused_and_unplayed() -> None:
    """A named cassette is used even if never served; a replayed one lists the connections
    no replay played; one recorded into during the run is not checked."""
    usage = Usage()
    usage.claim("/c", "/c/skipped.jsonl")
    usage.served("/c", "/c/two.jsonl", played=[1])
    usage.served("/c", "/c/new.jsonl", recorded=True)
    connections = {"/c/two.jsonl": [1, 2, 3], "/c/new.jsonl": [1, 2]}
    listed = ["/c/new.jsonl", "/c/orphan.jsonl", "/c/skipped.jsonl", "/c/two.jsonl"]
    assert usage.unused(listed) == ["/c/orphan.jsonl"]
    assert usage.unplayed(connections.__getitem__) == [Unplayed("/c/two.jsonl", (2, 3))]
    assert usage.unplayed(connections.__getitem__)[0].render() == (
        "/c/two.jsonl: recorded connection(s) 2, 3 never played"
    )


def test_workers_ledgers_merge_through_json() -> None:
    """Two workers played different connections of one cassette: merged, none is unplayed;
    a stale cassette is named once."""
    first, second, controller = Usage(), Usage(), Usage()
    first.served("/c", "/c/two.jsonl", played=[1], stale="old")
    second.served("/c", "/c/two.jsonl", played=[2], stale="old")
    second.claim("/d", "/d/x.jsonl")
    for worker in (first, second):
        controller.merge(worker.to_json())
    assert controller == Usage(
        folders={"/c", "/d"},
        claimed={"/c/two.jsonl", "/d/x.jsonl"},
        cassettes={"/c/two.jsonl": CassetteUse({1, 2}, False)},
        stale={"/c/two.jsonl": "old"},
    )
    assert controller.unplayed(lambda name: [1, 2]) == []
    assert first.to_json() == {
        "folders": ["/c"], "claimed": ["/c/two.jsonl"],
        "cassettes": {"/c/two.jsonl": {"played": [1], "recorded": False}},
        "stale": {"/c/two.jsonl": "old"},
    }  # fmt: skip
