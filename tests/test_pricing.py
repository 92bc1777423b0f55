"""Tests for batchgen.pricing: shipped table, user overrides, model-name matching, billing arithmetic."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from batchgen.errors import ConfigError
from batchgen.records import Usage
from batchgen.report.pricing import Cost, Price, PriceTable, Rates, billed_tier

PRO = Price(
    "gemini-2.5-pro",
    Rates(input=1.25, output=10.0, cached_input=0.125),
    long=Rates(input=2.5, output=15.0, cached_input=0.25),
    long_context_threshold=200_000,
)
FLASH = Price("gemini-2.5-flash", Rates(input=0.30, output=2.50, cached_input=0.03))


@pytest.fixture(scope="module")
def shipped() -> PriceTable:
    return PriceTable.load()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_table_prices_every_model_the_project_supports(shipped: PriceTable) -> None:
    """The shipped table has every supported model, each with a date and a source."""
    expected = {
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-3-pro-preview",
        "gemini-3.1-pro-preview",
        "gemini-3-flash-preview",
        "gemini-2.0-flash",
    }
    assert expected <= set(shipped.prices)
    for price in shipped.prices.values():
        assert isinstance(price.as_of, date)
        assert price.source
        assert price.standard.cached_input < price.standard.input < price.standard.output


def test_shipped_pro_models_have_a_long_context_tier(shipped: PriceTable) -> None:
    """Pro models charge more above 200k prompt tokens; the reference's 2.5 Pro figures are shipped."""
    assert shipped.price_for("gemini-2.5-pro") == Price(
        "gemini-2.5-pro",
        Rates(1.25, 10.0, 0.125),
        long=Rates(2.5, 15.0, 0.25),
        long_context_threshold=200_000,
        as_of=shipped.prices["gemini-2.5-pro"].as_of,
        source=shipped.prices["gemini-2.5-pro"].source,
        tiers=shipped.prices["gemini-2.5-pro"].tiers,
    )
    for name in ("gemini-3-pro-preview", "gemini-3.1-pro-preview"):
        assert shipped.prices[name].long_context_threshold == 200_000


def test_cost_bills_fresh_input_cache_reads_and_thinking_as_output() -> None:
    """Fresh input is prompt - cached (prompt includes the cache); tool use is input; thoughts are output."""
    got = FLASH.cost(Usage(prompt=10_000, cached=4_000, candidates=500, thoughts=1_500, tool_use=200), 1)
    # input:  (10_000 - 4_000 + 200) * 0.30 / 1e6 = 6_200 * 0.30 / 1e6 = 0.00186
    # cached:  4_000 * 0.03 / 1e6                                      = 0.00012
    # output: (500 + 1_500) * 2.50 / 1e6 = 2_000 * 2.5 / 1e6           = 0.005
    assert got.input == pytest.approx(0.00186)
    assert got.cached == pytest.approx(0.00012)
    assert got.output == pytest.approx(0.005)
    assert got.total == pytest.approx(0.00698)


def test_missing_counts_are_zero_tokens() -> None:
    """Counts the API never reported (None) bill nothing, and a row without usage costs 0."""
    assert FLASH.cost(Usage(), 0) == Cost()
    assert FLASH.cost(Usage(prompt=1_000_000), 1).input == pytest.approx(0.30)


@pytest.mark.parametrize(
    ("prompt", "responses", "long"),
    [
        pytest.param(250_000, 1, True, id="one-long-response"),
        pytest.param(200_000, 1, False, id="exactly-the-threshold-is-standard"),
        pytest.param(200_001, 1, True, id="one-over-the-threshold"),
        pytest.param(300_000, 2, False, id="two-150k-responses"),
        pytest.param(500_000, 2, True, id="two-250k-responses"),
        pytest.param(250_000, 0, True, id="tokens-without-counted-response-count-as-one"),
    ],
)
def test_long_tier_is_decided_per_response(prompt: int, responses: int, long: bool) -> None:
    """A row's tier follows its mean prompt per response, since each response is billed on its own prompt."""
    assert PRO.is_long(prompt, responses) is long
    got = PRO.cost(Usage(prompt=prompt, candidates=1_000), responses)
    rates = PRO.long if long else PRO.standard
    assert rates is not None
    assert got.input == pytest.approx(prompt * rates.input / 1e6)
    assert got.output == pytest.approx(1_000 * rates.output / 1e6)


def test_long_tier_raises_input_cache_and_output_rates() -> None:
    """Above the threshold every part of the request is billed at the long rates."""
    got = PRO.cost(Usage(prompt=250_000, cached=50_000, candidates=1_000, thoughts=3_000), 1)
    # input:  (250_000 - 50_000) * 2.50 / 1e6 = 0.5
    # cached:  50_000 * 0.25 / 1e6            = 0.0125
    # output: (1_000 + 3_000) * 15.0 / 1e6    = 0.06
    assert (got.input, got.cached, got.output) == pytest.approx((0.5, 0.0125, 0.06))


def test_a_model_without_long_tier_never_switches() -> None:
    """Flash models have one tier whatever the prompt size."""
    assert not FLASH.is_long(900_000, 1)
    assert FLASH.rates(True) == FLASH.standard


def test_charge_bills_sums_at_the_given_rates() -> None:
    """`Rates.charge` prices aggregated sums at one tier, matching the sum of the rows' costs."""
    rows = [Usage(1_000, 10, 20, 100, 0), Usage(3_000, 30, 0, 0, 5)]
    by_row = sum((FLASH.standard.charge(row) for row in rows), Cost())
    summed = FLASH.standard.charge(rows[0] + rows[1])
    assert (summed.input, summed.cached, summed.output) == pytest.approx((by_row.input, by_row.cached, by_row.output))


@pytest.mark.parametrize(
    ("model", "priced_as"),
    [
        pytest.param("gemini-2.5-flash", "gemini-2.5-flash", id="exact"),
        pytest.param("models/gemini-2.5-flash", "gemini-2.5-flash", id="models-prefix"),
        pytest.param("gemini-2.5-flash-preview-09-2025", "gemini-2.5-flash", id="dated-preview"),
        pytest.param("gemini-2.5-flash-lite-preview-06-17", "gemini-2.5-flash-lite", id="longest-prefix"),
        pytest.param("gemini-2.0-flash-001", "gemini-2.0-flash", id="numbered-version"),
        pytest.param("gemini-3-flash-preview", "gemini-3-flash-preview", id="preview-exact"),
    ],
)
def test_model_names_resolve_exactly_then_by_version_suffix(shipped: PriceTable, model: str, priced_as: str) -> None:
    """Results may name a dated or prefixed variant of a table model; it is priced as that model."""
    assert shipped.price_for(model).model == priced_as


@pytest.mark.parametrize(
    "model",
    [
        pytest.param("gemini-2.5-flash-image", id="other-product-suffix"),
        pytest.param("gemini-9-ultra", id="unknown"),
        pytest.param("", id="empty"),
    ],
)
def test_unknown_model_is_an_error_never_zero(shipped: PriceTable, model: str) -> None:
    """A model the table cannot price raises ConfigError naming the model and the table file."""
    with pytest.raises(ConfigError, match="no price for model") as info:
        shipped.price_for(model)
    assert repr(model) in str(info.value)
    assert info.value.file == "batchgen/data/prices.toml"


def test_user_file_overrides_one_price_and_keeps_the_rest(tmp_path: Path) -> None:
    """A partial user entry changes only the keys it sets; other models are untouched."""
    user = write(tmp_path, '[models."gemini-2.5-flash"]\ninput = 0.5\n')
    table = PriceTable.load(user)
    flash = table.price_for("gemini-2.5-flash")
    assert flash.standard == Rates(input=0.5, output=2.5, cached_input=0.03)
    assert table.price_for("gemini-2.5-pro").standard.input == 1.25
    assert table.files == ("batchgen/data/prices.toml", str(user))
    assert flash.cost(Usage(prompt=1_000_000), 1).input == pytest.approx(0.5)


def test_user_file_adds_a_model(tmp_path: Path) -> None:
    """A user can price a model the shipped table lacks, with its own long tier."""
    user = write(
        tmp_path,
        '[models."my-tuned"]\nas_of = 2026-01-02\nsource = "contract"\ninput = 1\noutput = 2\n'
        "cached_input = 0.1\nlong_context_threshold = 1000\ninput_long = 3\noutput_long = 4\n"
        "cached_input_long = 0.3\n",
    )
    price = PriceTable.load(user).price_for("my-tuned-001")
    assert price == Price(
        "my-tuned",
        Rates(1.0, 2.0, 0.1),
        long=Rates(3.0, 4.0, 0.3),
        long_context_threshold=1000,
        as_of=date(2026, 1, 2),
        source="contract",
        tiers={"batch": 0.5, "flex": 0.5, "priority": 2.0},
    )


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        pytest.param('[models."x"]\ninput = 1\noutput = 2\n', 'models."x".cached_input', "missing", id="missing"),
        pytest.param(
            '[models."gemini-2.5-flash"]\ninptu = 1\n',
            'models."gemini-2.5-flash".inptu',
            "unknown key",
            id="typo",
        ),
        pytest.param(
            '[models."gemini-2.5-flash"]\ninput = "1"\n',
            'models."gemini-2.5-flash".input',
            "number",
            id="string-price",
        ),
        pytest.param(
            '[models."gemini-2.5-flash"]\ninput = -1\n',
            'models."gemini-2.5-flash".input',
            "non-negative",
            id="negative",
        ),
        pytest.param(
            '[models."gemini-2.5-flash"]\ninput = nan\n',
            'models."gemini-2.5-flash".input',
            "number",
            id="nan",
        ),
        pytest.param(
            '[models."gemini-2.5-flash"]\nas_of = "2026"\n',
            'models."gemini-2.5-flash".as_of',
            "date",
            id="date-as-string",
        ),
        pytest.param(
            '[models."gemini-2.5-flash"]\nlong_context_threshold = 1000\n',
            'models."gemini-2.5-flash"',
            "input_long",
            id="half-a-long-tier",
        ),
        pytest.param(
            '[models."gemini-2.5-pro"]\nlong_context_threshold = 0\n',
            'models."gemini-2.5-pro".long_context_threshold',
            "positive",
            id="zero-threshold",
        ),
        pytest.param("[prices]\nx = 1\n", "prices", "unknown key", id="top-level-typo"),
        pytest.param("[tiers]\nbacth = 0.5\n", "tiers.bacth", "unknown service tier", id="tier-typo"),
        pytest.param("[tiers]\nflex = -0.5\n", "tiers.flex", "non-negative", id="negative-tier"),
        pytest.param("tiers = 0.5\n", "tiers", "table", id="tiers-not-a-table"),
        pytest.param("models = 3\n", "models", "table", id="models-not-a-table"),
    ],
)
def test_bad_user_file_names_file_and_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    """Every problem in a price file is a ConfigError carrying the file and the key at fault."""
    user = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        PriceTable.load(user)
    assert info.value.file == str(user)
    assert info.value.key == key


@pytest.mark.parametrize("text", [pytest.param("input = = 1", id="syntax"), pytest.param("\udcff", id="not-utf8")])
def test_unreadable_user_file_is_a_config_error(tmp_path: Path, text: str) -> None:
    """A price file that is not TOML is a ConfigError naming it."""
    user = tmp_path / "prices.toml"
    user.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ConfigError, match="not a valid TOML file") as info:
        PriceTable.load(user)
    assert info.value.file == str(user)


def test_missing_user_file_is_a_config_error(tmp_path: Path) -> None:
    """Asking for a price file that does not exist fails before anything is reported."""
    with pytest.raises(ConfigError, match="cannot read price file") as info:
        PriceTable.load(tmp_path / "nope.toml")
    assert info.value.file == str(tmp_path / "nope.toml")


# --- service tiers ---------------------------------------------------------------------------------------------


def test_shipped_tiers_halve_batch_and_flex_and_double_priority(shipped: PriceTable) -> None:
    """The Batch API and Flex cost half of standard; Priority (UNCONFIRMED, +75-100 %) is priced at the top."""
    flash = shipped.price_for("gemini-2.5-flash")
    assert dict(flash.tiers) == {"batch": 0.5, "flex": 0.5, "priority": 2.0}
    usage = Usage(prompt=10_000, cached=4_000, candidates=500, thoughts=1_500)
    standard = flash.cost(usage, 1)
    assert flash.cost(usage, 1, "batch").total == pytest.approx(standard.total / 2)
    assert flash.cost(usage, 1, "flex").cached == pytest.approx(standard.cached / 2)
    assert flash.cost(usage, 1, "priority").output == pytest.approx(standard.output * 2)


def test_a_tier_scales_the_long_context_rates_too(shipped: PriceTable) -> None:
    pro = shipped.price_for("gemini-2.5-pro")
    assert pro.rates(True, "batch") == Rates(1.25, 7.5, 0.125)


def test_a_tier_the_table_lacks_is_an_error_not_standard() -> None:
    """A Price without multipliers (built by hand) cannot price a batch row as if it were standard."""
    with pytest.raises(ConfigError, match="no multiplier for service tier 'batch'"):
        FLASH.cost(Usage(prompt=1), 1, "batch")


def test_user_file_overrides_a_tier(tmp_path: Path) -> None:
    """A negotiated rate: `[tiers]` keys override the shipped ones one by one."""
    table = PriceTable.load(write(tmp_path, "[tiers]\nflex = 0.4\n"))
    assert dict(table.price_for("gemini-2.5-flash").tiers) == {"batch": 0.5, "flex": 0.4, "priority": 2.0}


@pytest.mark.parametrize(
    ("traffic", "reported", "tier"),
    [
        pytest.param("batch", "standard", "batch", id="batch-whatever-it-reports"),
        pytest.param("flex", None, "flex", id="flex-asked"),
        pytest.param("flex", "standard", "standard", id="flex-asked-served-standard"),
        pytest.param("standard", "FLEX", "flex", id="reported-any-case"),
        pytest.param("standard", "ON_DEMAND_PRIORITY", "priority", id="vertex-traffic-type"),
        pytest.param("standard", "turbo", "standard", id="unknown-report-not-trusted"),
        pytest.param(None, None, "standard", id="old-results"),
    ],
)
def test_billed_tier(traffic: str | None, reported: str | None, tier: str) -> None:
    """A batch row is billed as batch; otherwise the tier the API reported, else the one asked for."""
    assert billed_tier(traffic, reported) == tier
