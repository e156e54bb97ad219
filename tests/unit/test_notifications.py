"""Webhook notifications' pure parts (core/notifications.py), as tables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kubetrain.core.notifications import (
    MAX_BACKOFF,
    MAX_TRIES,
    Notifications,
    backoff,
    check_webhook_url,
    describe_failure,
    given_up,
    notification_body,
    wants,
)
from kubetrain.core.specs import JobSpec, format_validation_error


@pytest.mark.parametrize("url", ["http://hooks.example.com/x", "https://127.0.0.1:8443/hook?token=abc",
                                 "http://[::1]:9000/", "HTTPS://EXAMPLE.COM"])
def test_http_and_https_urls_are_accepted(url):
    assert check_webhook_url(url.lower() if url.isupper() else url)


@pytest.mark.parametrize("url, words", [
    ("ftp://example.com/x", "not an http or https URL (scheme 'ftp')"),
    ("file:///etc/passwd", "not an http or https URL"),
    ("javascript:alert(1)", "not an http or https URL"),
    ("example.com/hook", "not an http or https URL (scheme 'none')"),
    ("http:///path", "names no host"),
    ("http://exa mple.com/", "spaces or control characters"),
    ("http://example.com/\n", "spaces or control characters"),
    ("http://example.com:http/", "not a valid URL"),
    ("http://example.com/" + "a" * 2048, "over the 2048"),
    (42, "is not a URL"),
])
def test_other_urls_are_refused_naming_the_field_the_value_and_the_fix(url, words):
    with pytest.raises(ValueError) as info:
        check_webhook_url(url, "URL")
    assert words in str(info.value) and str(info.value).startswith("URL ")
    assert "e.g. https://" in str(info.value) or "shorter URL" in str(info.value) or "like https://" in str(info.value)


def test_a_spec_names_its_webhook_and_its_states_and_errors_name_the_field():
    spec = JobSpec.model_validate({"spec": {"command": ["x"], "notifications": {"webhook": "https://h/x",
                                                                               "on": ["Failed", "Failed"]}}})
    assert spec.spec.notifications == Notifications(webhook="https://h/x", on=["Failed"])
    assert JobSpec.model_validate({"spec": {"command": ["x"], "notifications": {"webhook": "http://h"}}}) \
        .spec.notifications.on == ["Succeeded", "Failed", "Cancelled"]
    for notifications, words in [({"webhook": "gopher://h"}, "spec.notifications.webhook: 'gopher://h' is not an http"),
                                 ({"webhook": "http://h", "on": ["Done"]}, "spec.notifications.on[0]"),
                                 ({"webhook": "http://h", "on": []}, "spec.notifications.on: the list is empty"),
                                 ({"url": "http://h"}, "spec.notifications")]:
        with pytest.raises(ValidationError) as info:
            JobSpec.model_validate({"spec": {"command": ["x"], "notifications": notifications}})
        said = str(format_validation_error(info.value))
        assert words in said, said


@pytest.mark.parametrize("on, state, heard", [
    (None, "Succeeded", True), (None, "Cancelled", True), (["Failed"], "Succeeded", False),
    (["Failed"], "Failed", True), (["Succeeded", "Cancelled"], "Cancelled", True), (None, "Running", False),
])
def test_which_end_states_a_webhook_hears(on, state, heard):
    assert wants(on, state) is heard


@pytest.mark.parametrize("tries, seconds", [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (7, 64), (12, MAX_BACKOFF)])
def test_backoff_doubles_from_one_second_and_is_capped(tries, seconds):
    assert backoff(tries) == seconds


def test_a_message_is_given_up_after_its_last_try():
    assert not given_up(MAX_TRIES - 1) and given_up(MAX_TRIES)
    assert 6 <= MAX_TRIES <= 10


def test_the_body_names_the_job_its_end_and_where_to_see_it():
    body = notification_body(job="train", state="Failed", reason="Error", message="exited 1", finished_at=12.5,
                             owner="ada", url="http://m/dashboard/jobs/train")
    assert body == {"job": "train", "state": "Failed", "reason": "Error", "message": "exited 1", "finished_at": 12.5,
                    "owner": "ada", "url": "http://m/dashboard/jobs/train"}


@pytest.mark.parametrize("status, error, words", [
    (500, None, "answered 500"), (302, None, "do not follow redirects"), (None, "ConnectError: refused", "refused"),
    (None, None, "no answer"),
])
def test_failures_are_said_in_words(status, error, words):
    assert words in describe_failure(status, error)
