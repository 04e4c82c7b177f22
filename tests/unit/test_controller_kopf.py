"""What Herald asks of kopf: event handlers only, so kopf's diff base can be switched off."""

from __future__ import annotations

import kopf

from herald.controller import NoDiffBase, registry


def test_only_event_handlers_so_no_handler_reads_the_diff_base() -> None:
    # A change handler (on.create/update/resume/delete/field) or a daemon/timer would read
    # kopf's diff base, which herald.controller.NoDiffBase leaves empty: adding one needs
    # kopf's own storage back.
    assert not registry._changing.get_all_handlers()
    assert not registry._spawning.get_all_handlers()
    assert not registry._indexing.get_all_handlers()
    watched = sorted(str(h.selector.any_name) for h in registry._watching.get_all_handlers())
    assert watched == ["clustersocialaccounts", "scheduledposts", "socialaccounts"]


def test_the_diff_base_copies_nothing() -> None:
    body = kopf.Body({"metadata": {"name": "p", "annotations": {"a": "b"}}, "spec": {"x": [1]}})
    storage = NoDiffBase()
    assert storage.build(body=body) == {} == storage.fetch(body=body)
    assert storage.build(body=body) is storage.build(body=body), "one shared empty essence"
