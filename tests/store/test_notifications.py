"""The webhook outbox (store/notifications.py): written with the job's end, tried, given up in words."""

from __future__ import annotations

from kubetrain.core.notifications import MAX_TRIES
from kubetrain.store.store import Store
from tests.store.test_store import NOW, PROVENANCE, make_spec


def test_an_end_writes_one_message_which_is_tried_with_backoff_and_given_up_with_a_warning(store: Store) -> None:
    store.create_job(make_spec("told", notifications={"webhook": "https://hooks.example.com/T/B/secret?k=v"}),
                     PROVENANCE, now=NOW)
    assert store.due_notifications(now=NOW + 100) == []  # nothing before the end
    store.request_cancel("told", now=NOW + 1)
    (message,) = store.due_notifications(now=NOW + 1)
    assert message.job == "told" and message.url.startswith("https://hooks.example.com/")
    assert message.body["state"] == "Cancelled" and message.body["finished_at"] == NOW + 1
    assert message.body["owner"] == PROVENANCE.submitter
    assert store.due_notifications(now=NOW + 1, skip=[message.id]) == []  # in flight: not handed out twice
    now = NOW + 1
    for tries in range(1, MAX_TRIES + 1):
        gave_up = store.notification_tried(message.id, now=now, error="the receiver answered 500")
        assert gave_up is (tries == MAX_TRIES)
        (state,) = store.notifications("told")
        assert state.tries == tries
        if not gave_up:
            assert store.due_notifications(now=now) == []  # backing off
            assert state.next_at - now == min(300, 2 ** (tries - 1))
            now = state.next_at
            assert [m.id for m in store.due_notifications(now=now)] == [message.id]
    assert store.due_notifications(now=now + 10_000) == []  # given up: never again
    warning = store.get_job("told").events[-1]
    assert warning.type == "Warning" and warning.reason == "NotificationFailed"
    assert "https://hooks.example.com" in warning.message and "secret" not in warning.message  # the path is private
    assert "answered 500" in warning.message


def test_delivered_is_final_and_states_not_listened_for_write_nothing(store: Store) -> None:
    store.create_job(make_spec("picky", notifications={"webhook": "http://h/x", "on": ["Failed"]}), PROVENANCE,
                     now=NOW)
    store.request_cancel("picky", now=NOW + 1)
    assert store.notifications("picky") == []
    store.create_job(make_spec("heard", notifications={"webhook": "http://h/x"}), PROVENANCE, now=NOW)
    store.request_cancel("heard", now=NOW + 1)
    (message,) = store.due_notifications(now=NOW + 1)
    assert store.notification_tried(message.id, now=NOW + 2, error=None) is False
    (state,) = store.notifications("heard")
    assert state.delivered_at == NOW + 2 and state.tries == 1 and state.last_error is None
    assert store.due_notifications(now=NOW + 1000) == []


def test_the_owners_default_webhook_applies_when_the_job_names_none(store: Store) -> None:
    store.add_user(PROVENANCE.submitter, "member", None, now=NOW, exist_ok=True)
    assert store.set_user_webhook(PROVENANCE.submitter, "https://me.example.com/hook") == "https://me.example.com/hook"
    assert store.user_webhook(PROVENANCE.submitter) == "https://me.example.com/hook"
    store.create_job(make_spec("plain"), PROVENANCE, now=NOW)
    store.request_cancel("plain", now=NOW + 1)
    assert [m.url for m in store.due_notifications(now=NOW + 1)] == ["https://me.example.com/hook"]
    store.set_user_webhook(PROVENANCE.submitter, None)
    store.create_job(make_spec("after"), PROVENANCE, now=NOW)
    store.request_cancel("after", now=NOW + 1)
    assert store.notifications("after") == []
