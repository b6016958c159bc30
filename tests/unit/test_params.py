"""The one parameter parser every protocol uses: finite numbers in range, real booleans."""

import pytest

from infaas.errors import InvalidInput
from infaas.protocol.params import parse_request_params


@pytest.mark.parametrize(
    "value",
    [
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        1e309,
        float("nan"),
        float("inf"),
        "1e309",
        True,
        False,
        [50],
        {"a": 1},
        "",
        "fast",
        -1,
        0,
    ],
)
def test_latency_ms_must_be_a_finite_positive_number(value):
    with pytest.raises(InvalidInput, match="parameter 'latency_ms'"):
        parse_request_params({"latency_ms": value})


@pytest.mark.parametrize("value", ["nan", float("nan"), -0.1, 1.5, "inf", True])
def test_min_accuracy_is_a_fraction(value):
    with pytest.raises(InvalidInput, match="parameter 'min_accuracy'"):
        parse_request_params({"min_accuracy": value})


def test_numbers_may_come_as_strings_for_clients_that_only_send_strings():
    p = parse_request_params({"latency_ms": "50", "min_accuracy": "0.9", "max_cost": 0.01})
    assert (p.latency_ms, p.min_accuracy, p.max_cost) == (50.0, 0.9, 0.01)


@pytest.mark.parametrize("key", ["drop_late", "binary_data_output", "allow_estimated"])
def test_booleans_are_real_booleans(key):
    assert getattr(parse_request_params({key: "false"}), key) is False  # not Python truthiness
    assert getattr(parse_request_params({key: "TRUE"}), key) is True
    assert getattr(parse_request_params({key: False}), key) is False
    for bad in (0, 1, "yes", "0", [True]):
        with pytest.raises(InvalidInput, match=f"parameter '{key}' must be a boolean"):
            parse_request_params({key: bad})


def test_timeout_is_microseconds_and_never_a_boolean():
    assert parse_request_params({"timeout": 5_000_000}).timeout_us == 5_000_000
    assert parse_request_params({"timeout": 0}).timeout_us is None  # Triton: 0 means the default
    for bad in (True, "nan", -5, 1e300):
        with pytest.raises(InvalidInput, match="parameter 'timeout'"):
            parse_request_params({"timeout": bad})


def test_unknown_parameters_pass_untouched():
    assert parse_request_params({"my_tag": float("nan"), "sequence_id": 7}) == parse_request_params({})
