"""Expanding notation for test series (spec section 7, after ``promtool test rules``)."""

from __future__ import annotations

import pytest

from perpwatch.testing.notation import MAX_VALUES, expand

_ = None


@pytest.mark.parametrize(
    ("text", "values"),
    [
        # a+bxn: n+1 values a, a+b, ..., a+n*b
        ("1+2x3", [1, 3, 5, 7]),
        ("100+1x7", [100, 101, 102, 103, 104, 105, 106, 107]),
        ("0+0x0", [0]),
        # a-bxn counts down
        ("10-1x2", [10, 9, 8]),
        ("2-3x2", [2, -1, -4]),
        # axn: n+1 copies
        ("5x2", [5, 5, 5]),
        ("7x0", [7]),
        ("0.05x3 0.12x3", [0.05] * 4 + [0.12] * 4),  # the spec's example: bars 0-3 and 4-7
        # _ is one missing value, _xn is n of them (promtool)
        ("_", [_]),
        ("_x3", [_, _, _]),
        ("_x1", [_]),
        ("1 _ 2x1 _x2 3", [1, _, 2, 2, _, _, 3]),
        # negatives
        ("-3", [-3]),
        ("-1+0.5x2", [-1, -0.5, 0]),
        ("-1-1x2", [-1, -2, -3]),
        ("-2x1", [-2, -2]),
        ("+4", [4]),
        # decimals
        ("1.5", [1.5]),
        (".5", [0.5]),
        ("2.", [2.0]),
        ("0.25+0.25x3", [0.25, 0.5, 0.75, 1.0]),
        # exponents
        ("1e3", [1000]),
        ("1.5e2", [150]),
        ("2.5E-1", [0.25]),
        ("1e-2x1", [0.01, 0.01]),
        ("1e3+1e2x2", [1000, 1100, 1200]),
        ("-1e1-5e0x1", [-10, -15]),
        # several tokens, any whitespace
        ("  1   2\t3\n4 ", [1, 2, 3, 4]),
        ("", []),
    ],
)
def test_expand(text, values):
    assert expand(text) == values


def test_each_value_is_a_plus_k_times_b_not_a_running_sum():
    # 0.1 + 2*0.1 = 0.30000000000000004 and 0.1 + 3*0.1 = 0.4 (a running sum would give 0.30000000000000004
    # and then 0.4000000000000001)
    assert expand("0.1+0.1x3") == [0.1, 0.1 + 1 * 0.1, 0.1 + 2 * 0.1, 0.1 + 3 * 0.1]
    assert expand("0.1+0.1x3")[3] == 0.4


def test_labels_for_text_metrics():
    assert expand("binance okx _ bybit") == ["binance", "okx", _, "bybit"]
    assert expand("gate.io crypto-com Hyper_liquid") == ["gate.io", "crypto-com", "Hyper_liquid"]


def test_words_that_look_like_numbers_are_not_numbers():
    # inf and nan never become infinities or NaN: they are labels, which a numeric metric refuses
    assert expand("inf nan") == ["inf", "nan"]


@pytest.mark.parametrize(
    "token",
    [
        "1+x3",  # no step
        "1+2",  # no count
        "1++2x3",
        "1+-2x3",  # the step is unsigned; write a-bxn
        "x3",  # no start
        "1x",
        "1x-2",
        "_x",
        "_x-1",
        "__",
        "1+2x3x4",
        "1,2",
        "1e",
        "1.2.3",
        "binancex3",  # a label ending in xN is almost surely a typo
        "+",
        "#",
        "1+2x3.5",
    ],
)
def test_bad_tokens_are_named(token):
    with pytest.raises(ValueError) as info:
        expand(f"1 {token} 2")
    assert str(info.value) == (
        f"{token!r} is not expanding notation; write a number, 'a+bxn', 'a-bxn', 'axn', '_' or '_xn'"
    )


def test_size_limit():
    assert len(expand(f"1x{MAX_VALUES - 1}")) == MAX_VALUES
    with pytest.raises(ValueError, match="expands past"):
        expand(f"1x{MAX_VALUES}")
    with pytest.raises(ValueError, match="expands past"):
        expand(f"0+1x{10**12}")
    with pytest.raises(ValueError, match="expands past"):
        expand(f"_x{10**12}")  # missing values count too (no 8 TB list)
    with pytest.raises(ValueError, match="expands past"):
        expand(f"1x{MAX_VALUES // 2} 2x{MAX_VALUES // 2}")  # the total, not each token
    assert len(expand(f"_x{MAX_VALUES}")) == MAX_VALUES
