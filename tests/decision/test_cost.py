"""Cost arithmetic to the cent (D3.1 4.9 "A x + B"), currency conversion, cloud list prices."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from jupyter_heroes.decision.cost import (
    CurrencyRates,
    Offer,
    PriceCatalog,
    PriceError,
    Usage,
    default_catalog,
    default_rates,
    nodes_needed,
    parse_amount,
    round_cents,
)

RATES = CurrencyRates.from_dict({"base": "EUR", "rates": {"USD": "1.0824", "CHF": "0.9526"}})


def test_a_x_plus_b_to_the_cent():
    # WUR Anunna's published prices: EUR 0.015/core-h + 0.0015/GB-h; plus a fixed EUR 0.50 per job.
    offer = Offer.from_dict({"currency": "EUR", "fixed": "0.50", "core_hour": "0.015", "gb_hour": "0.0015"})
    usage = Usage(core_hours=D("1500"), mem_gb_hours=D("1000.5"), jobs=3)
    bill = offer.price(usage)
    assert [(line.item, line.amount) for line in bill.lines] == [
        ("fixed", D("1.50")),
        ("core_hour", D("22.50")),
        ("gb_hour", D("1.50")),  # 1.50075 rounds to 1.50
    ]
    assert bill.total == D("25.50")
    assert bill.currency == "EUR"


def test_every_usage_kind_and_licence_fees():
    offer = Offer.from_dict(
        {
            "currency": "EUR",
            "core_hour": "0.008",
            "node_hour": "1.25",
            "gpu_hour": "0.35",
            "gb_hour": "0.001",
            "storage_gb_month": "0.02",
            "transfer_gb": "0.09",
        }
    )
    u = Usage(
        core_hours=D("100"),
        node_hours=D("2"),
        gpu_hours=D("3"),
        mem_gb_hours=D("5"),
        storage_gb_month=D("10"),
        transfer_gb=D("1.5"),
    )
    amounts = {line.item: line.amount for line in offer.price(u).lines}
    assert amounts == {
        "core_hour": D("0.80"),
        "node_hour": D("2.50"),
        "gpu_hour": D("1.05"),
        "gb_hour": D("0.01"),  # 0.005 rounds half-up
        "storage_gb_month": D("0.20"),
        "transfer_gb": D("0.14"),  # 0.135 rounds half-up
    }
    # An application provider's licence: a fixed fee per workflow run plus a rate per core-hour.
    licence = Offer.from_dict(
        {"name": "ansys", "currency": "USD", "fixed": "20", "fixed_per": "run", "core_hour": "0.1"}
    )
    lb = licence.price(Usage(core_hours=D("100"), jobs=3, runs=1))
    assert [(line.item, line.amount) for line in lb.lines] == [
        ("ansys fixed", D("20.00")),
        ("ansys core_hour", D("10.00")),
    ]


def test_conversion_rounds_once_half_up():
    assert RATES.convert_cents(D("12.00"), "EUR", "USD") == D("12.99")  # 12.9888
    assert RATES.convert_cents(D("10.00"), "USD", "EUR") == D("9.24")  # 9.23872...
    assert RATES.convert_cents(D("10.00"), "USD", "CHF") == D("8.80")  # via EUR: 8.80081...
    assert RATES.convert(D("3.10"), "EUR", "EUR") == D("3.10")
    assert round_cents(D("0.125")) == D("0.13") and round_cents(D("0.124999")) == D("0.12")


def test_default_rates_are_documented():
    r = default_rates()
    assert r.base == "EUR" and r.rates["USD"] == D("1.0824")
    assert "ECB" in r.source


def test_floats_are_read_by_their_repr():
    assert parse_amount(0.1, "x") == D("0.1")
    assert Usage.from_floats(core_hours=0.1).core_hours == D("0.1")
    with pytest.raises(ValueError, match="unknown usage kind"):
        Usage.from_floats(cpu_hours=1.0)
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        Usage.from_floats(core_hours=-1.0)


@pytest.mark.parametrize(
    ("offer", "message"),
    [
        ({"core_hour": "-0.01"}, r"offer\.core_hour: '-0\.01' is negative"),
        ({"core_hour": -1}, r"offer\.core_hour: -1 is negative"),
        ({"fixed": "abc"}, r"offer\.fixed: 'abc' is not a number"),
        ({"gpu_hour": "NaN"}, r"offer\.gpu_hour: 'NaN' is not a finite number"),
        ({"gpu_hour": float("inf")}, "not a finite number"),
        ({"node_hour": True}, "expected a price"),
        ({"node_hour": None}, "expected a price"),
        ({"node_hour": [1]}, "expected a price"),
        ({"cpu_hour": "1"}, r"unknown field\(s\) \['cpu_hour'\]"),
        ({"currency": "euro"}, "not an ISO 4217 currency code"),
        ({"fixed_per": "month"}, "fixed_per"),
    ],
)
def test_malformed_or_negative_prices_are_refused(offer, message):
    with pytest.raises(PriceError, match=message):
        Offer.from_dict(offer)
    assert issubclass(PriceError, ValueError)


def test_bad_rate_tables():
    with pytest.raises(PriceError, match="a rate of 0"):
        CurrencyRates.from_dict({"base": "EUR", "rates": {"USD": 0}})
    with pytest.raises(PriceError, match="base currency's own rate must be 1"):
        CurrencyRates.from_dict({"base": "EUR", "rates": {"EUR": 2}})
    with pytest.raises(PriceError, match="expected"):
        CurrencyRates.from_dict({"USD": 1})
    with pytest.raises(PriceError, match=r"no exchange rate for GBP.*add it"):
        RATES.convert(D(1), "GBP", "EUR")


def test_cloud_list_prices():
    cat = default_catalog()
    p = cat.lookup("aws", "hpc6a.48xlarge", "eu-north-1")
    assert (p.vcpus, p.memory_gib, p.price_per_hour, p.currency) == (96, 384.0, D("3.093"), "USD")
    # 2 instances for 1.5 h
    bill = p.offer().price(Usage(node_hours=D("3")))
    assert bill.total == D("9.28") and bill.currency == "USD"  # 9.279
    assert cat.lookup("oci", "BM.GPU4.8").gpus == 8
    with pytest.raises(PriceError, match=r"priced differently by region; set site.cloud.region to one of \["):
        cat.lookup("aws", "hpc6a.48xlarge")
    with pytest.raises(PriceError, match="no list price for aws instance type 'm5.large'"):
        cat.lookup("aws", "m5.large")
    with pytest.raises(PriceError, match="in region 'mars-1'"):
        cat.lookup("aws", "hpc6a.48xlarge", "mars-1")


def test_malformed_catalog(tmp_path):
    p = tmp_path / "prices.csv"
    p.write_text(
        "provider,instance_type,vcpus,memory_gib,gpus,accelerator,usd_per_hour,region\naws,x,4,8,0,,-1,r\n"
    )
    with pytest.raises(PriceError, match=r"line 2, usd_per_hour: '-1' is negative"):
        PriceCatalog.from_csv(p)
    p.write_text("provider,instance_type\naws,x\n")
    with pytest.raises(PriceError, match="line 2"):
        PriceCatalog.from_csv(p)


def test_nodes_needed():
    # 1 node asked, 128 cores on 96-vCPU instances -> 2 instances
    assert nodes_needed(1, 128, 1024, 0, 96, 384 * 1024, 0) == 2
    # memory drives it: 2 nodes x 300 GB on 128 GB instances -> 5
    assert nodes_needed(2, 2, 300 * 1024, 0, 64, 128 * 1024, 0) == 5
    assert nodes_needed(1, 1, 512, 16, 96, 1152 * 1024, 8) == 2
    assert nodes_needed(1, 1, 512, 1, 96, 1024, 0) == 0  # no GPUs on the instance
