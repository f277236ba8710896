"""The answer's schema and its checks against the context, and the offline provider's rules (deterministic)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from strategy_engine.suggestions.context import compact_account, digest, summarise_signals
from strategy_engine.suggestions.offline import OfflineProvider
from strategy_engine.suggestions.schema import AnswerInvalid, parse_answer

CONTEXT = {
    "as_of": "2027-01-20T10:00:00+00:00",
    "account": {"cash": "64800", "available": "64800", "equity": "99510", "positions": [
        {"symbol": "AAA", "quantity": "300", "average_price": "100", "last_price": "100", "value": "30000",
         "weight": "0.3015", "unrealised_pnl": "0", "unrealised_pct": "0", "products": ["MIS"]},
        {"symbol": "BBB", "quantity": "100", "average_price": "50", "last_price": "45", "value": "4500",
         "weight": "0.0452", "unrealised_pnl": "-500", "unrealised_pct": "-10", "products": ["MIS"]},
        {"symbol": "DDD", "quantity": "10", "average_price": "20", "last_price": "21", "value": "210",
         "weight": "0.0021", "unrealised_pnl": "10", "unrealised_pct": "5", "products": ["MIS"]},
        {"symbol": "EEE", "quantity": "-20", "average_price": "10", "last_price": "11", "value": "-220",
         "weight": "0.0022", "unrealised_pnl": "-20", "unrealised_pct": "-10", "products": ["MIS"]},
    ]},
    "signals": {"read": 10, "undecodable": 1, "symbols": 2, "by_symbol": [
        {"symbol": "CCC", "count": 5, "buys": 5, "sells": 0, "net": 1.0, "detectors": ["breakout", "momentum"],
         "mean_strength": 1.5, "max_strength": 1.5, "last_price": 12.5, "last_age_s": 3.0},
        {"symbol": "BBB", "count": 4, "buys": 0, "sells": 4, "net": -1.0, "detectors": ["momentum"],
         "mean_strength": 3.0, "max_strength": 3.0, "last_price": 45.0, "last_age_s": 2.0},
    ]},
}


def good(**over) -> dict:
    return {"symbol": "AAA", "action": "reduce", "size": 0.2, "size_unit": "position_fraction",
            "rationale": "too big", "confidence": 0.7, **over}


def answer(*items, **top) -> str:
    return json.dumps({"summary": "s", "suggestions": list(items), **top})


def test_a_valid_answer_parses_exactly():
    out = parse_answer(answer(good(), good(symbol="CCC", action="buy", size=0.02, size_unit="equity_fraction")),
                       CONTEXT, 10)
    assert [s.symbol for s in out.suggestions] == ["AAA", "CCC"]
    assert out.suggestions[0].size == Decimal("0.2") and out.suggestions[1].size == Decimal("0.02")
    fenced = "```json\n" + answer(good()) + "\n```"
    assert parse_answer(fenced, CONTEXT, 10).suggestions[0].symbol == "AAA"


@pytest.mark.parametrize("text, words", [
    ("Sure! Here are my thoughts", "not JSON"),
    ("[1, 2]", "not an object"),
    (answer(good(confidence=1.5)), "suggestions.0.confidence"),
    (answer(good(action="short")), "suggestions.0.action"),
    (answer(good(size=-1)), "suggestions.0.size"),
    (answer(good(size=1.5)), "at most 1"),
    (answer(good(action="hold")), "hold has size 0"),
    (answer(good(action="close", size=0.5)), "close is size 1"),
    (answer(good(action="buy", size_unit="position_fraction")), "buy is sized in quantity or equity_fraction"),
    (answer(good(rationale="")), "suggestions.0.rationale"),
    (answer(good(extra="x")), "suggestions.0.extra"),
    (answer(good(), orders=[]), "orders"),
    (json.dumps({"summary": "no list"}), "suggestions"),
    (answer(good(symbol="ZZZ")), "ZZZ) : the symbol is not in the context".replace(") :", "):")),
    (answer(good(symbol="CCC")), "reduce needs a position"),
    (answer(good(symbol="DDD", size=11, size_unit="quantity")), "exceeds the position 10"),
    (answer(good(), good(size=0.1)), "a second suggestion"),
    (answer(*[good(symbol=s, action="hold", size=0, size_unit="quantity") for s in ("AAA", "BBB", "DDD")]),
     "3 suggestions; at most 2"),
])
def test_an_invalid_answer_is_refused_whole_with_a_reason(text, words):
    with pytest.raises(AnswerInvalid, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_answer(text, CONTEXT, 2)


def test_offline_rules_on_the_context():
    out = OfflineProvider().suggest(CONTEXT, "scan my portfolio", 10)
    got = {s["symbol"]: (s["action"], s["size"], s["size_unit"], s["confidence"]) for s in out["suggestions"]}
    assert got == {
        "BBB": ("close", "1", "position_fraction", 0.8),  # -10% and 4 of 4 signals sell
        "CCC": ("buy", "0.02", "equity_fraction", 0.7),  # no position, 5 of 5 signals buy
        "AAA": ("reduce", "0.17", "position_fraction", 0.55),  # 30.15% of equity: back to ~25%
        "EEE": ("reduce", "0.5", "position_fraction", 0.55),  # short, -10%
        "DDD": ("hold", "0", "quantity", 0.5),
    }
    assert [s["symbol"] for s in out["suggestions"]] == ["BBB", "CCC", "AAA", "EEE", "DDD"]  # most confident first
    assert "30.2% of equity" in out["suggestions"][2]["rationale"]
    assert out["summary"].startswith("4 position(s), equity 99510; 1 buy, 1 close, 1 hold, 2 reduce")
    # its own answer passes the same validation as a remote model's
    assert len(parse_answer(json.dumps(out), CONTEXT, 10).suggestions) == 5


def test_offline_rules_are_deterministic_focus_on_named_symbols_and_cap():
    p = OfflineProvider()
    assert json.dumps(p.suggest(CONTEXT, "scan", 10)) == json.dumps(p.suggest(json.loads(json.dumps(CONTEXT)),
                                                                               "scan", 10))
    focused = p.suggest(CONTEXT, "what about aaa and ccc?", 10)
    assert [s["symbol"] for s in focused["suggestions"]] == ["CCC", "AAA"]
    assert [s["symbol"] for s in p.suggest(CONTEXT, "scan", 2)["suggestions"]] == ["BBB", "CCC"]
    empty = {"account": {"equity": "1000", "positions": []}, "signals": {"by_symbol": []}}
    assert p.suggest(empty, "scan", 10)["suggestions"] == []


def test_compact_account_from_kite_answers():
    margins = {"equity": {"available": {"cash": "1000", "live_balance": "900"}}}
    positions = {"net": [
        {"tradingsymbol": "AAA", "quantity": "10", "average_price": "100", "last_price": "90", "product": "MIS"},
        {"tradingsymbol": "ZZZ", "quantity": "0", "average_price": "5", "last_price": "5", "product": "MIS"},
    ], "day": []}
    holdings = [{"tradingsymbol": "HLD", "quantity": "5", "average_price": "20", "last_price": "22"}]
    acct = compact_account(margins, positions, holdings)
    assert acct["equity"] == "2010" and acct["cash"] == "1000" and acct["available"] == "900"
    assert [p["symbol"] for p in acct["positions"]] == ["AAA", "HLD"]  # largest value first; flat ones left out
    aaa = acct["positions"][0]
    assert (aaa["value"], aaa["unrealised_pnl"], aaa["unrealised_pct"], aaa["weight"]) == ("900", "-100", "-10",
                                                                                            "0.4478")
    assert acct["positions"][1]["products"] == ["CNC"]


def test_signal_summary_and_digest():
    from common.messages import Side, encode

    from .suggest_kit import signal

    entries = [(b"1-0", {b"d": encode(signal("X", Side.BUY, seq=i))}) for i in range(3)]
    entries += [(b"2-0", {b"d": encode(signal("X", Side.SELL, seq=9, detector="dom"))}), (b"3-0", {b"d": b"junk"}),
                (b"4-0", {})]
    s = summarise_signals(entries, now_ns=0)
    assert s["read"] == 6 and s["undecodable"] == 2
    [x] = s["by_symbol"]
    assert (x["count"], x["buys"], x["sells"], x["net"], x["detectors"]) == (4, 3, 1, 0.5, ["dom", "momentum"])
    assert digest(CONTEXT) == digest(json.loads(json.dumps(CONTEXT))) != digest({**CONTEXT, "as_of": "x"})
