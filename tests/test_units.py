import json

import pytest

from volley.numbers.units import (
    Arrivals,
    BadInput,
    IdleStates,
    Noisy,
    Restart,
    SweepOrder,
    choose,
    parse_confidence,
    parse_duration_s,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("180s", 180.0),
        ("3m", 180.0),
        ("500ms", 0.5),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        (" 10 s ", 10.0),
    ],
)
def test_durations(text, seconds):
    assert parse_duration_s(text, "--max-time") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "-1s", "1d", "1.2.3s", "ten"])
def test_bad_durations_name_the_option(text):
    with pytest.raises(BadInput, match="--max-time"):
        parse_duration_s(text, "--max-time")


@pytest.mark.parametrize("option", ["--warmup", "--max-time"])
def test_a_duration_without_a_unit_is_refused_with_the_fix(option):
    with pytest.raises(BadInput, match=f"^{option} '3' needs a unit: say 3s$"):
        parse_duration_s("3", option, allow_zero=True)


def test_zero_duration_only_where_allowed():
    assert parse_duration_s("0", "--warmup", allow_zero=True) == 0
    with pytest.raises(BadInput, match="must be more than zero"):
        parse_duration_s("0s", "--max-time")


@pytest.mark.parametrize(("text", "level"), [("0.95", 0.95), ("99%", 0.99), ("0.5", 0.5)])
def test_confidence(text, level):
    assert parse_confidence(text) == pytest.approx(level)


@pytest.mark.parametrize("text", ["1", "95", "0.4", "100%", "sure", ""])
def test_bad_confidence(text):
    with pytest.raises(BadInput, match="--confidence"):
        parse_confidence(text)


@pytest.mark.parametrize("choices", [IdleStates, Arrivals, Restart, Noisy, SweepOrder])
def test_a_choice_is_spelled_as_typed_on_the_command_line_and_in_json(choices):
    for member in choices:
        assert choose(choices, member.value, "--x") is member
        assert json.dumps({"x": member}) == json.dumps({"x": member.value})
        assert f"{member}" == member.value


def test_a_choice_not_offered_names_the_option_and_every_choice():
    with pytest.raises(BadInput, match=r"^--noisy 'loud' is not one of keep, drop, fail$"):
        choose(Noisy, "loud", "--noisy")
