"""Label selectors in the `kubectl -l` syntax, and matching them against node labels."""

from __future__ import annotations

import pytest

from kubetrain.core.selectors import (
    Requirement,
    SelectorError,
    format_selector,
    matches,
    parse_selector,
    selector_from_mapping,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu-type=a100", (Requirement("gpu-type", "In", ("a100",)),)),
        ("gpu-type==a100", (Requirement("gpu-type", "In", ("a100",)),)),
        ("gpu-type = a100", (Requirement("gpu-type", "In", ("a100",)),)),
        ("tier!=low", (Requirement("tier", "NotIn", ("low",)),)),
        ("zone in (a,b)", (Requirement("zone", "In", ("a", "b")),)),
        ("zone in ( a , b )", (Requirement("zone", "In", ("a", "b")),)),
        ("zone in(a)", (Requirement("zone", "In", ("a",)),)),
        ("tier notin (low)", (Requirement("tier", "NotIn", ("low",)),)),
        ("fast", (Requirement("fast", "Exists"),)),
        ("!spot", (Requirement("spot", "DoesNotExist"),)),
        ("example.com/gpu=yes", (Requirement("example.com/gpu", "In", ("yes",)),)),
        ("role=", (Requirement("role", "In", ("",)),)),
        ("", ()),
        ("   ", ()),
        (
            "gpu-type=a100,zone in (a, b),!spot,tier notin (low),fast",
            (
                Requirement("gpu-type", "In", ("a100",)),
                Requirement("zone", "In", ("a", "b")),
                Requirement("spot", "DoesNotExist"),
                Requirement("tier", "NotIn", ("low",)),
                Requirement("fast", "Exists"),
            ),
        ),
        ("a=1, b!=2", (Requirement("a", "In", ("1",)), Requirement("b", "NotIn", ("2",)))),
    ],
)
def test_parse_selector(text, expected):
    assert parse_selector(text) == expected


LABELS = {"gpu-type": "a100", "zone": "a", "fast": "", "tier": "high"}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("gpu-type=a100", LABELS, True),
        ("gpu-type=h100", LABELS, False),
        ("gpu-type=a100", {}, False),
        ("gpu-type!=h100", LABELS, True),
        ("gpu-type!=a100", LABELS, False),
        ("zone in (a,b)", LABELS, True),
        ("zone in (b,c)", LABELS, False),
        ("zone in (a,b)", {}, False),
        ("tier notin (low)", LABELS, True),
        ("tier notin (high,low)", LABELS, False),
        # Like Kubernetes: a node without the key satisfies NotIn and !=.
        ("tier notin (low)", {}, True),
        ("tier!=low", {}, True),
        ("fast", LABELS, True),
        ("fast", {"slow": ""}, False),
        ("!spot", LABELS, True),
        ("!spot", {"spot": "true"}, False),
        ("!fast", LABELS, False),
        ("gpu-type=a100,zone in (a,b),!spot,tier notin (low),fast", LABELS, True),
        ("gpu-type=a100,!fast", LABELS, False),
        ("gpu-type=a100,zone=b", LABELS, False),
        ("", {}, True),
        ("", LABELS, True),
    ],
)
def test_matches(selector, labels, expected):
    assert matches(parse_selector(selector), labels) is expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("zone in (a,b", "unbalanced '('"),
        ("zone in a,b)", "unbalanced ')'"),
        ("a=b,", "empty requirement"),
        (",a=b", "empty requirement"),
        ("a=b,,c=d", "empty requirement"),
        ("zone in ()", "needs at least one value"),
        ("zone notin ( , )", "needs at least one value"),
        ("=a100", "not a valid label key"),
        ("gpu type=a100", "not a valid label key"),
        ("-gpu=a100", "not a valid label key"),
        ("!", "not a valid label key"),
        ("!gpu=a100", "not a valid label key"),
        ("gpu=a 100", "not a valid label value"),
        ("gpu=a=b", "not a valid label value"),
        ("gpu=-a", "not a valid label value"),
        ("gpu=" + "a" * 64, "not a valid label value"),
        ("zone in (a b)", "not a valid label value"),
        ("a b in (x)", "not a valid label key"),
    ],
)
def test_malformed_selectors_raise_helpful_errors(text, fragment):
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    message = str(info.value)
    assert fragment in message
    # Every message shows the accepted forms, so the user can fix it.
    if "longer than" not in message:
        assert "key=value" in message and "key in (a,b)" in message


def test_overlong_selector_is_refused():
    with pytest.raises(SelectorError, match="longer than 4096"):
        parse_selector("a=b," * 2000)


def test_selector_error_is_a_value_error():
    assert issubclass(SelectorError, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "gpu-type=a100",
        "tier!=low",
        "zone in (a, b)",
        "tier notin (low, mid)",
        "fast",
        "!spot",
        "gpu-type=a100,zone in (a, b),!spot,tier!=low,fast",
    ],
)
def test_format_round_trips(text):
    requirements = parse_selector(text)
    assert format_selector(requirements) == text
    assert parse_selector(format_selector(requirements)) == requirements


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("tier notin (low)", "tier!=low"),
        ("zone in (a)", "zone=a"),
        ("gpu-type==a100", "gpu-type=a100"),
        (" a = 1 ,  b in (x,y) ", "a=1,b in (x, y)"),
    ],
)
def test_format_canonicalises(text, canonical):
    assert format_selector(parse_selector(text)) == canonical


def test_requirement_str_uses_short_forms_for_single_values():
    assert str(Requirement("a", "In", ("x",))) == "a=x"
    assert str(Requirement("a", "NotIn", ("x",))) == "a!=x"
    assert str(Requirement("a", "In", ("x", "y"))) == "a in (x, y)"
    assert str(Requirement("a", "NotIn", ("x", "y"))) == "a notin (x, y)"


def test_selector_from_mapping_gives_equality_requirements():
    requirements = selector_from_mapping({"gpu-type": "a100", "zone": "b"})
    assert requirements == (
        Requirement("gpu-type", "In", ("a100",)),
        Requirement("zone", "In", ("b",)),
    )
    assert matches(requirements, {"gpu-type": "a100", "zone": "b", "x": "y"})
    assert not matches(requirements, {"gpu-type": "a100"})


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [({"bad key": "x"}, "not a valid label key"), ({"k": "bad value"}, "not a valid label value")],
)
def test_selector_from_mapping_checks_keys_and_values(mapping, fragment):
    with pytest.raises(SelectorError, match=fragment):
        selector_from_mapping(mapping)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("gpu > 2", "'gpu > 2' uses '>', which is not a selector operator"),
        ("gpu>=2,zone=a", "'gpu>=2' in 'gpu>=2,zone=a' uses '>='"),
        ("name=~a.*", "uses '=~'"),
        ("zone in a,b", "the values after 'in' go in parentheses, e.g. zone in (a, b)"),
        ("spot exists", "write 'spot' for exists and '!spot' for does not exist"),
    ],
)
def test_operators_from_elsewhere_are_named_with_the_allowed_ones(text, fragment):
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    message = str(info.value)
    assert fragment in message
    assert "the operators allowed are key=value, key==value, key!=value, key in (a,b), key notin (a,b)" in message
