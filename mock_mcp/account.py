"""The simulated broker account behind the mock MCP server: cash, holdings, positions, orders, trades.

All money and quantities are ``Decimal``. The account changes only through
``apply_report`` (execution reports from ``ex:events``: order state, and fills when
``last_qty > 0``), ``place_order`` / ``cancel_order`` and ``match``.

Two sources of fills, never both for one order:

- orders the gateway routed elsewhere (the simulator venue) reach the account only as
  reports on ``ex:events`` (``source="gateway"``);
- orders placed through ``place_order`` (the gateway's MCP venue, or a person) are the
  broker's own: ``match(marks)`` fills them against the latest marks (see its docstring),
  and the gateway's reports of them — which repeat the broker's own fills — are **not**
  applied (``ReportResult.OWN``): an order placed with a ``client_order_id`` is matched to
  the gateway's reports by that id. After a restart of the mock broker the account is
  rebuilt from ``ex:events`` alone (its own orders are in memory only), so those fills are
  then counted once, from the reports.

Accounting model (a cash account that can also go short):

- a buy fill: ``cash -= qty * px + fee``; a sell fill: ``cash += qty * px - fee``;
- positions are net per symbol with an average price; a fill against the position
  realises ``closed_qty * (px - average_price) * direction``; a fill that crosses zero
  flips the position and opens the rest at the fill price;
- realised P&L is gross of fees; fees are charged to cash and summed in ``charges``;
- ``live_balance`` (what is free to trade) = cash − short exposure at the last price
  (short-sale proceeds are held as 100% margin) − cash blocked by OPEN buy orders placed
  through ``place_order``;
- seed holdings (CNC delivery) never change through fills; a sale of a held symbol
  shows as a negative position, as at Kite, and as ``used_quantity`` in holdings.

Views (``profile``, ``margins``, ``holdings``, ``positions``, ``orders``, ``trades``) are
modelled on Kite Connect's JSON. **Every money and quantity value is a decimal string**
(exact, e.g. ``"1234.5"``); counts and flags are JSON numbers and booleans; timestamps
are ``"YYYY-MM-DD HH:MM:SS"`` (UTC).
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from common.accounting import apply_fill
from common.config import ConfigError
from common.instruments import Instruments
from common.messages import ExecutionReport, OrdStatus, Side

__all__ = [
    "Account",
    "AccountSeed",
    "Holding",
    "InvalidOrder",
    "Order",
    "Position",
    "ReportResult",
    "Trade",
    "dec_str",
    "generate_seed",
    "load_seed",
]

ZERO = Decimal(0)
MAX_QTY = Decimal("1e12")
MAX_PRICE = Decimal("1e12")

# Kite-style order statuses the views use.
OPEN, COMPLETE, CANCELLED, REJECTED = "OPEN", "COMPLETE", "CANCELLED", "REJECTED"
_TERMINAL = {COMPLETE, CANCELLED, REJECTED}
_STATUS_FROM_REPORT = {
    OrdStatus.PENDING_NEW: "OPEN PENDING",
    OrdStatus.ACCEPTED: OPEN,
    OrdStatus.PARTIALLY_FILLED: OPEN,
    OrdStatus.FILLED: COMPLETE,
    OrdStatus.PENDING_CANCEL: "CANCEL PENDING",
    OrdStatus.CANCELLED: CANCELLED,
    OrdStatus.REJECTED: REJECTED,
    OrdStatus.EXPIRED: CANCELLED,
}
_VARIETIES = {"regular"}
_PRODUCTS = {"CNC", "MIS", "NRML"}
_ORDER_TYPES = {"MARKET", "LIMIT", "SL", "SL-M"}
_VALIDITIES = {"DAY", "IOC", "TTL"}
MAX_HISTORY = 200  # order-history entries kept per order
MAX_INSTRUMENTS = 500  # instruments per get_ltp / get_quotes call
# The universe of a generated (seeded) account's holdings.
SEED_UNIVERSE = ("ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO", "FOXTROT", "GOLF", "HOTEL", "INDIA", "JULIET")


class InvalidOrder(ValueError):
    """``place_order`` / ``cancel_order`` input that no broker would accept; the message says why."""


def dec_str(d: Decimal) -> str:
    """Canonical decimal string: plain notation, no trailing zeros (``Decimal("100.50")`` → ``"100.5"``)."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s in ("", "-0"):
        return "0"
    return s


def _ts(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if ns > 0 else ""


# -- seed ----------------------------------------------------------------------------------


class _SeedHolding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    tradingsymbol: str = Field(min_length=1, max_length=64)
    quantity: Decimal = Field(gt=0)
    average_price: Decimal = Field(ge=0)
    exchange: str = "SIM"
    isin: str = ""


class _SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: str = Field("SIM001", min_length=1)
    user_name: str = "Simulated Trader"
    user_shortname: str = "Simulated"
    email: str = "sim@example.invalid"
    user_type: str = "individual"
    broker: str = "SIM"
    exchanges: list[str] = ["SIM"]
    products: list[str] = ["CNC", "MIS", "NRML"]
    order_types: list[str] = ["MARKET", "LIMIT", "SL", "SL-M"]
    mis_leverage: Decimal = Field(Decimal(1), ge=1, le=100)
    holdings: list[_SeedHolding] = []


@dataclass(frozen=True, slots=True)
class AccountSeed:
    """Profile fields and seed holdings (from ``config/account.yml``); default: no holdings."""

    user_id: str = "SIM001"
    user_name: str = "Simulated Trader"
    user_shortname: str = "Simulated"
    email: str = "sim@example.invalid"
    user_type: str = "individual"
    broker: str = "SIM"
    exchanges: tuple[str, ...] = ("SIM",)
    products: tuple[str, ...] = ("CNC", "MIS", "NRML")
    order_types: tuple[str, ...] = ("MARKET", "LIMIT", "SL", "SL-M")
    holdings: tuple[tuple[str, str, Decimal, Decimal, str], ...] = ()  # (symbol, exchange, qty, avg, isin)
    # Intraday (MIS) leverage: an MIS position needs 1/mis_leverage of its notional as margin.
    mis_leverage: Decimal = Decimal(1)


def load_seed(path: Path | str) -> AccountSeed:
    """Read and validate the account file; unknown or bad keys raise ``ConfigError`` naming them."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"account file {p}: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"account file {p}: expected a mapping at the top level")
    try:
        f = _SeedFile.model_validate(doc)
    except ValidationError as e:
        msgs = [
            f"{'.'.join(map(str, err['loc']))}: "
            + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in e.errors()
        ]
        raise ConfigError(f"account file {p}: " + "; ".join(msgs)) from e
    syms = [h.tradingsymbol for h in f.holdings]
    if len(set(syms)) != len(syms):
        raise ConfigError(f"account file {p}: holdings list a symbol twice")
    return AccountSeed(
        user_id=f.user_id,
        user_name=f.user_name,
        user_shortname=f.user_shortname,
        email=f.email,
        user_type=f.user_type,
        broker=f.broker,
        exchanges=tuple(f.exchanges),
        products=tuple(f.products),
        order_types=tuple(f.order_types),
        mis_leverage=f.mis_leverage,
        holdings=tuple(
            (h.tradingsymbol, h.exchange, h.quantity, h.average_price, h.isin) for h in f.holdings
        ),
    )


def generate_seed(seed: int, base: AccountSeed | None = None) -> AccountSeed:
    """A deterministic account for ``seed``: the same user id and holdings every time.

    Profile fields and leverage come from ``base``; the user id is ``SIM<seed>`` and 1-4
    delivery holdings are drawn from ``SEED_UNIVERSE`` (quantity 1-100, average price
    50-2000 in steps of 0.05) by ``random.Random(seed)``. ``base`` must list no holdings.
    """
    base = base or AccountSeed()
    if base.holdings:
        raise ConfigError("a seeded account generates its holdings: the account file must list none")
    rng = random.Random(seed)
    syms = sorted(rng.sample(SEED_UNIVERSE, rng.randint(1, 4)))
    holdings = tuple(
        (sym, base.exchanges[0] if base.exchanges else "SIM", Decimal(rng.randint(1, 100)),
         Decimal(rng.randint(1000, 40_000)) * Decimal("0.05"), f"SIM{seed % 10**6:06d}{i:03d}")
        for i, sym in enumerate(syms)
    )
    return AccountSeed(
        user_id=f"SIM{seed:06d}"[:32], user_name=base.user_name, user_shortname=base.user_shortname,
        email=base.email, user_type=base.user_type, broker=base.broker, exchanges=base.exchanges,
        products=base.products, order_types=base.order_types, holdings=holdings, mis_leverage=base.mis_leverage,
    )


# -- records -------------------------------------------------------------------------------


@dataclass(slots=True)
class Position:
    """Net position in one symbol and product (MIS intraday, CNC delivery, NRML)."""

    symbol: str
    exchange: str = "SIM"
    product: str = "MIS"
    quantity: Decimal = ZERO
    average_price: Decimal = ZERO
    realised: Decimal = ZERO
    buy_quantity: Decimal = ZERO
    buy_value: Decimal = ZERO
    sell_quantity: Decimal = ZERO
    sell_value: Decimal = ZERO
    charges: Decimal = ZERO

    def apply(self, side: Side, qty: Decimal, px: Decimal) -> Decimal:
        """Apply one fill; return the P&L it realised (gross of fees)."""
        if side == Side.BUY:
            self.buy_quantity += qty
            self.buy_value += qty * px
        else:
            self.sell_quantity += qty
            self.sell_value += qty * px
        self.quantity, self.average_price, realised = apply_fill(
            self.quantity, self.average_price, int(side), qty, px
        )
        self.realised += realised
        return realised

    def unrealised(self, last: Decimal) -> Decimal:
        return (last - self.average_price) * self.quantity if self.quantity else ZERO


@dataclass(slots=True)
class Holding:
    """A delivery (CNC) holding from the seed."""

    symbol: str
    exchange: str
    quantity: Decimal
    average_price: Decimal
    isin: str = ""


@dataclass(slots=True)
class Order:
    order_id: str
    tradingsymbol: str
    exchange: str
    transaction_type: str
    quantity: Decimal
    product: str = "MIS"
    order_type: str = "MARKET"
    price: Decimal = ZERO
    trigger_price: Decimal = ZERO
    validity: str = "DAY"
    variety: str = "regular"
    tag: str = ""
    status: str = OPEN
    status_message: str = ""
    filled_quantity: Decimal = ZERO
    cancelled_quantity: Decimal = ZERO
    average_price: Decimal = ZERO
    order_ts: int = 0
    exchange_ts: int = 0
    source: str = "mcp"  # "mcp": placed through place_order; "gateway": learnt from ex:events
    client_order_id: str = ""  # the caller's id (place_order), or the gateway's id of a learnt order
    triggered: bool = False  # SL / SL-M: the trigger price was reached
    fills: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # get_order_history: one view per change

    def record(self, status: str | None = None) -> None:
        """Append the order as it is now (``status`` overrides the shown status, e.g. MODIFIED)."""
        v = self.view()
        if status is not None:
            v["status"] = status
        self.history.append(v)
        if len(self.history) > MAX_HISTORY:
            del self.history[1]  # keep the first (placement) entry

    @property
    def pending_quantity(self) -> Decimal:
        if self.status in _TERMINAL:
            return ZERO
        return max(self.quantity - self.filled_quantity - self.cancelled_quantity, ZERO)

    def view(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "exchange_order_id": self.order_id if self.source == "gateway" else "",
            "parent_order_id": None,
            "status": self.status,
            "status_message": self.status_message or None,
            "order_timestamp": _ts(self.order_ts),
            "exchange_timestamp": _ts(self.exchange_ts) or None,
            "variety": self.variety,
            "exchange": self.exchange,
            "tradingsymbol": self.tradingsymbol,
            "instrument_token": 0,
            "order_type": self.order_type,
            "transaction_type": self.transaction_type,
            "validity": self.validity,
            "product": self.product,
            "quantity": dec_str(self.quantity),
            "disclosed_quantity": "0",
            "price": dec_str(self.price),
            "trigger_price": dec_str(self.trigger_price),
            "average_price": dec_str(self.average_price),
            "filled_quantity": dec_str(self.filled_quantity),
            "pending_quantity": dec_str(self.pending_quantity),
            "cancelled_quantity": dec_str(self.cancelled_quantity),
            "tag": self.tag or None,
            "client_order_id": self.client_order_id or None,
        }


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    order_id: str
    exchange: str
    tradingsymbol: str
    transaction_type: str
    product: str
    price: Decimal
    quantity: Decimal
    fee: Decimal
    ts: int
    exec_id: str
    client_order_id: str = ""

    def view(self) -> dict[str, Any]:
        return {
            "trade_id": self.trade_id,
            "order_id": self.order_id,
            "exchange_order_id": self.order_id,
            "tradingsymbol": self.tradingsymbol,
            "exchange": self.exchange,
            "instrument_token": 0,
            "transaction_type": self.transaction_type,
            "product": self.product,
            "average_price": dec_str(self.price),
            "quantity": dec_str(self.quantity),
            "fill_timestamp": _ts(self.ts),
            "order_timestamp": _ts(self.ts),
            "exchange_timestamp": _ts(self.ts),
            "charges": dec_str(self.fee),
            "exec_id": self.exec_id,
            "client_order_id": self.client_order_id or None,
        }


class ReportResult:
    """What ``Account.apply_report`` did with a report (string constants)."""

    FILL = "fill"
    ORDER = "order"  # order state only (last_qty == 0)
    DUPLICATE = "duplicate"
    INVALID = "invalid"
    OWN = "own"  # a report of an order placed through place_order: the broker's own fills count


# -- the account ---------------------------------------------------------------------------


@dataclass
class Account:
    """A simulated broker account, deterministic for a given seed and sequence of reports."""

    initial_cash: Decimal
    seed: AccountSeed = field(default_factory=AccountSeed)
    instruments: Instruments | None = None
    max_orders: int = 100_000
    max_trades: int = 100_000
    clock: Callable[[], int] = time.time_ns
    fee_bps: Decimal = ZERO  # fee of the broker's own fills, basis points of notional

    def __post_init__(self) -> None:
        self.cash: Decimal = self.initial_cash
        self.charges: Decimal = ZERO
        self.positions: dict[tuple[str, str], Position] = {}  # (symbol, product) -> position
        self.quotes: dict[str, _Quote] = {}  # symbol -> the marks seen this session (get_ltp / get_quotes)
        self.mis_margin = Decimal(1) / self.seed.mis_leverage  # margin per unit of MIS notional
        self.holdings: dict[str, Holding] = {
            sym: Holding(sym, exch, qty, avg, isin) for sym, exch, qty, avg, isin in self.seed.holdings
        }
        self.orders: OrderedDict[str, Order] = OrderedDict()
        self.trades: deque[Trade] = deque(maxlen=self.max_trades)
        self.last_fill_price: dict[str, Decimal] = {}
        self.applied: set[str] = set()  # exec ids already applied: a re-delivered report is a no-op
        self.own: dict[str, str] = {}  # client_order_id -> order_id of orders placed through place_order
        self._order_seq = 0

    # -- changes ---------------------------------------------------------------------------
    def apply_report(self, rep: ExecutionReport) -> str:
        """Apply one execution report once (by ``exec_id``); a report with ``last_qty > 0`` is a fill."""
        if rep.exec_id in self.applied:
            return ReportResult.DUPLICATE
        if rep.client_order_id in self.own:
            return ReportResult.OWN  # the broker placed and filled it itself (see the module docstring)
        if rep.last_qty < 0 or (rep.last_qty > 0 and rep.last_px <= 0) or rep.fee < 0:
            return ReportResult.INVALID
        self.applied.add(rep.exec_id)
        self._upsert_order(rep)
        if rep.last_qty == 0:
            return ReportResult.ORDER
        self._book(
            rep.symbol, rep.side, rep.last_qty, rep.last_px, rep.fee,
            trade_id=rep.venue_trade_id or rep.exec_id, order_id=rep.client_order_id, exchange=rep.venue or "SIM",
            ts=rep.ts_exec, exec_id=rep.exec_id, client_order_id=rep.client_order_id,
        )
        return ReportResult.FILL

    def position(self, symbol: str, product: str = "MIS") -> Position | None:
        """The position in ``symbol`` under ``product`` (the gateway's fills are MIS)."""
        return self.positions.get((symbol, product))

    def net_quantity(self, symbol: str) -> Decimal:
        """Signed quantity of ``symbol`` over every product (holdings not included)."""
        return sum((p.quantity for (s, _), p in self.positions.items() if s == symbol), ZERO)

    def _book(
        self, symbol: str, side: Side, qty: Decimal, px: Decimal, fee: Decimal, *, trade_id: str, order_id: str,
        exchange: str, ts: int, exec_id: str, client_order_id: str, product: str = "MIS",
    ) -> None:
        pos = self.positions.get((symbol, product))
        if pos is None:
            pos = self.positions[(symbol, product)] = Position(symbol, exchange=exchange, product=product)
        pos.apply(side, qty, px)
        pos.charges += fee
        self.cash += (-qty * px if side == Side.BUY else qty * px) - fee
        self.charges += fee
        self.last_fill_price[symbol] = px
        self.trades.append(
            Trade(
                trade_id=trade_id,
                order_id=order_id,
                exchange=exchange,
                tradingsymbol=symbol,
                transaction_type="BUY" if side == Side.BUY else "SELL",
                product=pos.product,
                price=px,
                quantity=qty,
                fee=fee,
                ts=ts,
                exec_id=exec_id,
                client_order_id=client_order_id,
            )
        )

    def match(self, marks: Mapping[str, Decimal]) -> int:
        """Fill the OPEN orders placed through ``place_order`` that the marks can fill; return the fills.

        The broker's own executions, deterministic for a given sequence of marks: an order
        fills in full at the symbol's mark (no mark: it waits). MARKET fills at once; LIMIT
        when the mark is at or better than its price (buy: mark <= price), at the mark; SL /
        SL-M trigger when the mark reaches the trigger (buy: mark >= trigger) and then work as
        LIMIT / MARKET. An IOC order that cannot fill on its first mark is cancelled. Fee =
        ``fee_bps`` of the notional. The fill is trade ``<order_id>-T<n>`` (also its exec_id).
        """
        self.observe(marks)
        n = 0
        for o in list(self.orders.values()):
            if o.source != "mcp" or o.status != OPEN:
                continue
            px = marks.get(o.tradingsymbol)
            if px is None or not px > 0:
                continue
            buy = o.transaction_type == "BUY"
            if o.order_type in ("SL", "SL-M") and not o.triggered:
                o.triggered = px >= o.trigger_price if buy else px <= o.trigger_price
            ok = o.order_type == "MARKET" or o.triggered and o.order_type == "SL-M"
            if o.order_type == "LIMIT" or o.triggered and o.order_type == "SL":
                ok = px <= o.price if buy else px >= o.price
            if not ok:
                if o.validity == "IOC" and (o.triggered or o.order_type not in ("SL", "SL-M")):
                    o.status, o.status_message = CANCELLED, "IOC: not fillable at the mark"
                    o.cancelled_quantity = o.quantity - o.filled_quantity
                    o.exchange_ts = self.clock()
                    o.record()
                continue
            qty = o.pending_quantity
            fee = (qty * px * self.fee_bps / 10_000).quantize(Decimal("1e-10"))
            o.fills += 1
            now = self.clock()
            trade_id = f"{o.order_id}-T{o.fills}"
            self._book(
                o.tradingsymbol, Side.BUY if buy else Side.SELL, qty, px, fee, trade_id=trade_id,
                order_id=o.order_id, exchange=o.exchange, ts=now, exec_id=trade_id, client_order_id=o.client_order_id,
                product=o.product,
            )
            o.average_price = (o.average_price * o.filled_quantity + px * qty) / (o.filled_quantity + qty)
            o.filled_quantity += qty
            o.status, o.exchange_ts = COMPLETE, now
            o.record()
            n += 1
        return n

    def observe(self, marks: Mapping[str, Decimal]) -> None:
        """Track the session's open / high / low / last per symbol from the marks (get_quotes)."""
        now = 0
        for sym, px in marks.items():
            if not px > 0:
                continue
            q = self.quotes.get(sym)
            if q is None:
                now = now or self.clock()
                self.quotes[sym] = _Quote(px, px, px, px, now)
            elif px != q.last:
                now = now or self.clock()
                q.last, q.ts = px, now
                q.high, q.low = max(q.high, px), min(q.low, px)

    def _upsert_order(self, rep: ExecutionReport) -> None:
        o = self.orders.get(rep.client_order_id)
        status = _STATUS_FROM_REPORT.get(rep.status, OPEN)
        if o is None:
            o = Order(
                order_id=rep.client_order_id,
                tradingsymbol=rep.symbol,
                exchange=rep.venue or "SIM",
                transaction_type="BUY" if rep.side == Side.BUY else "SELL",
                quantity=rep.order_qty,
                tag=rep.strategy[:20],
                order_ts=rep.ts_intent or rep.ts_exec,
                source="gateway",
                client_order_id=rep.client_order_id,
            )
            self._add_order(o)
        # Out-of-order delivery must not reopen a finished order or shrink what was filled.
        if rep.cum_qty >= o.filled_quantity:
            o.filled_quantity = rep.cum_qty
            if rep.avg_px > 0:
                o.average_price = rep.avg_px
        if o.status not in _TERMINAL:
            o.status = status
            if status == CANCELLED:
                o.cancelled_quantity = max(o.quantity - o.filled_quantity, ZERO)
        if rep.reason or rep.text:
            o.status_message = rep.reason or rep.text
        o.exchange_ts = max(o.exchange_ts, rep.ts_exec)
        o.record()

    def _add_order(self, o: Order) -> None:
        self.orders[o.order_id] = o
        while len(self.orders) > self.max_orders:
            self.orders.popitem(last=False)

    def place_order(
        self,
        *,
        tradingsymbol: str,
        transaction_type: str,
        quantity: Decimal,
        exchange: str = "SIM",
        product: str = "MIS",
        order_type: str = "MARKET",
        price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        validity: str = "DAY",
        variety: str = "regular",
        tag: str = "",
        marks: Mapping[str, Decimal] | None = None,
        client_order_id: str = "",
    ) -> Order:
        """Validate and record an order: OPEN, or REJECTED (with a reason) for lack of funds.

        Raises ``InvalidOrder`` on input no broker would accept. ``client_order_id`` (optional,
        1-64 characters) is the caller's id: placing it again returns the first order
        (idempotent, so a caller may retry a placement whose answer it lost), and the
        gateway's reports for it are not applied (the broker's own fills count).
        A BUY needs ``quantity * price * margin(product)`` of live balance (MIS: 1 /
        ``mis_leverage``; CNC and NRML: the full notional); a CNC SELL needs the holding.
        """
        if client_order_id:
            if len(client_order_id) > 64 or any(c.isspace() for c in client_order_id):
                raise InvalidOrder("client_order_id must be 1-64 characters without spaces")
            first = self.own.get(client_order_id)
            if first is not None and first in self.orders:
                return self.orders[first]
        sym = (tradingsymbol or "").strip()
        if not sym or len(sym) > 64 or any(c.isspace() for c in sym):
            raise InvalidOrder("tradingsymbol must be 1-64 characters without spaces")
        if not exchange or len(exchange) > 16:
            raise InvalidOrder("exchange must be 1-16 characters")
        side = (transaction_type or "").upper()
        if side not in ("BUY", "SELL"):
            raise InvalidOrder(f"transaction_type must be BUY or SELL, not {transaction_type!r}")
        _check_variety(variety)
        product = product.upper()
        if product not in _PRODUCTS:
            raise InvalidOrder(f"product must be one of {sorted(_PRODUCTS)}, not {product!r}")
        if tag and (len(tag) > 20 or not tag.replace("_", "").replace("-", "").isalnum()):
            raise InvalidOrder("tag must be at most 20 letters, digits, '-' or '_'")
        order_type, qty, px, trig, validity = self._check_terms(sym, order_type, quantity, price, trigger_price,
                                                                validity)

        self._order_seq += 1
        o = Order(
            order_id=f"SIM{self._order_seq:012d}",
            tradingsymbol=sym,
            exchange=exchange,
            transaction_type=side,
            quantity=qty,
            product=product,
            order_type=order_type,
            price=px,
            trigger_price=trig,
            validity=validity,
            variety=variety,
            tag=tag,
            order_ts=self.clock(),
            client_order_id=client_order_id,
        )
        # A business rejection is an order in state REJECTED with a reason, not an error.
        marks = marks or {}
        if side == "BUY":
            need, free = self._funds_needed(o, marks), self.live_balance(marks)
            if need > free:
                o.status, o.status_message = (
                    REJECTED,
                    f"insufficient funds: need {dec_str(need)}, available {dec_str(free)}",
                )
        elif product == "CNC" and qty > self.sellable(sym):
            o.status, o.status_message = REJECTED, "insufficient holdings for a CNC sell"
        if client_order_id:
            self.own[client_order_id] = o.order_id
            learnt = self.orders.get(client_order_id)
            if learnt is not None and learnt.source == "gateway" and not learnt.filled_quantity:
                # The gateway's report of this order (e.g. ACCEPTED) came before the placement itself.
                del self.orders[client_order_id]
        self._add_order(o)
        o.record()
        return o

    def _check_terms(
        self, sym: str, order_type: str, quantity: Any, price: Any, trigger_price: Any, validity: str
    ) -> tuple[str, Decimal, Decimal, Decimal, str]:
        """Validate what place_order and modify_order share; return (order_type, qty, price, trigger, validity)."""
        order_type, validity = (order_type or "").upper(), (validity or "").upper()
        if order_type not in _ORDER_TYPES:
            raise InvalidOrder(f"order_type must be one of {sorted(_ORDER_TYPES)}, not {order_type!r}")
        if validity not in _VALIDITIES:
            raise InvalidOrder(f"validity must be one of {sorted(_VALIDITIES)}, not {validity!r}")
        qty = _finite("quantity", quantity)
        if qty <= 0 or qty > MAX_QTY:
            raise InvalidOrder(f"quantity must be > 0 and <= {MAX_QTY:f}, not {dec_str(qty)}")
        inst = self.instruments.get(sym) if self.instruments else None
        if inst is not None and not inst.is_lot_multiple(qty):
            raise InvalidOrder(
                f"quantity {dec_str(qty)} is not a multiple of the lot size {dec_str(inst.lot_size)}"
            )
        px = _finite("price", price) if price is not None else ZERO
        trig = _finite("trigger_price", trigger_price) if trigger_price is not None else ZERO
        if order_type in ("LIMIT", "SL"):
            if px <= 0 or px > MAX_PRICE:
                raise InvalidOrder(f"{order_type} orders need a price > 0")
        elif px != 0:
            raise InvalidOrder(f"{order_type} orders take no price")
        if order_type in ("SL", "SL-M"):
            if trig <= 0 or trig > MAX_PRICE:
                raise InvalidOrder(f"{order_type} orders need a trigger_price > 0")
        elif trig != 0:
            raise InvalidOrder(f"{order_type} orders take no trigger_price")
        if inst is not None:
            for name, val in (("price", px), ("trigger_price", trig)):
                if val and not inst.is_tick_multiple(val):
                    raise InvalidOrder(
                        f"{name} {dec_str(val)} is not a multiple of the tick size {dec_str(inst.tick_size)}"
                    )
        return order_type, qty, px, trig, validity

    def margin_rate(self, product: str) -> Decimal:
        """Margin per unit of notional: 1 / mis_leverage for MIS, 1 (the full price) otherwise."""
        return self.mis_margin if product == "MIS" else Decimal(1)

    def _funds_needed(self, o: Order, marks: Mapping[str, Decimal]) -> Decimal:
        ref = o.price or o.trigger_price or self.last_price(o.tradingsymbol, marks)
        return o.pending_quantity * ref * self.margin_rate(o.product)

    def sellable(self, symbol: str) -> Decimal:
        """What a CNC sell may still sell: the holding plus today's CNC position (bought or already sold)."""
        held = self.holdings.get(symbol)
        cnc = self.position(symbol, "CNC")
        return (held.quantity if held else ZERO) + (cnc.quantity if cnc else ZERO)

    def modify_order(
        self,
        order_id: str,
        variety: str = "regular",
        *,
        quantity: Any = None,
        price: Any = None,
        order_type: str | None = None,
        trigger_price: Any = None,
        validity: str | None = None,
        marks: Mapping[str, Decimal] | None = None,
    ) -> Order:
        """Change an OPEN order placed through ``place_order``; arguments left ``None`` keep their value.

        Raises ``InvalidOrder`` when the order is unknown, finished, the gateway's, or the new
        terms are invalid, or when a BUY's new terms need more funds than are free.
        """
        _check_variety(variety)
        o = self.orders.get(order_id)
        if o is None:
            raise InvalidOrder(f"order {order_id!r} not found")
        if o.source != "mcp":
            raise InvalidOrder(f"order {order_id} was routed by the execution gateway; modify it there")
        if o.status in _TERMINAL:
            raise InvalidOrder(f"order {order_id} is {o.status} and cannot be modified")
        new_type = (order_type or o.order_type).upper()
        px = price if price is not None else (o.price or None)
        trig = trigger_price if trigger_price is not None else (o.trigger_price or None)
        # A kept price that the new order type does not take is dropped.
        if price is None and new_type not in ("LIMIT", "SL"):
            px = None
        if trigger_price is None and new_type not in ("SL", "SL-M"):
            trig = None
        new = self._check_terms(
            o.tradingsymbol, new_type, quantity if quantity is not None else o.quantity, px, trig,
            validity if validity is not None else o.validity,
        )
        if new[1] < o.filled_quantity:
            raise InvalidOrder(f"quantity {dec_str(new[1])} is below the filled {dec_str(o.filled_quantity)}")
        marks = marks or {}
        old = (o.order_type, o.quantity, o.price, o.trigger_price, o.validity)
        if o.transaction_type == "BUY":
            free = self.live_balance(marks) + self._funds_needed(o, marks)  # this order's own block is free again
            o.order_type, o.quantity, o.price, o.trigger_price, o.validity = new
            need = self._funds_needed(o, marks)
            if need > free:
                o.order_type, o.quantity, o.price, o.trigger_price, o.validity = old
                raise InvalidOrder(f"insufficient funds: need {dec_str(need)}, available {dec_str(free)}")
        elif o.product == "CNC" and new[1] > self.sellable(o.tradingsymbol):
            raise InvalidOrder("insufficient holdings for a CNC sell")
        o.order_type, o.quantity, o.price, o.trigger_price, o.validity = new
        if o.order_type not in ("SL", "SL-M"):
            o.triggered = False
        o.exchange_ts = self.clock()
        o.record("MODIFIED")
        o.record()
        return o

    def cancel_order(self, order_id: str, variety: str = "regular") -> Order:
        """Cancel an OPEN order; raise ``InvalidOrder`` when it is unknown or already finished."""
        _check_variety(variety)
        o = self.orders.get(order_id)
        if o is None:
            raise InvalidOrder(f"order {order_id!r} not found")
        if o.status in _TERMINAL:
            raise InvalidOrder(f"order {order_id} is {o.status} and cannot be cancelled")
        o.cancelled_quantity = o.pending_quantity
        o.status = CANCELLED
        o.status_message = "cancelled by user"
        o.exchange_ts = self.clock()
        o.record()
        return o

    def order_history(self, order_id: str) -> list[dict[str, Any]]:
        """Every state the order went through, oldest first (Kite's ``order_history``)."""
        o = self.orders.get(order_id)
        if o is None:
            raise InvalidOrder(f"order {order_id!r} not found")
        return [dict(v) for v in o.history]

    # -- values ----------------------------------------------------------------------------
    def last_price(self, symbol: str, marks: Mapping[str, Decimal]) -> Decimal:
        """The gateway's mark when it has one, else the latest fill price, else 0."""
        px = marks.get(symbol)
        if px is not None and px > 0:
            return px
        return self.last_fill_price.get(symbol, ZERO)

    def _price_or_avg(self, symbol: str, avg: Decimal, marks: Mapping[str, Decimal]) -> Decimal:
        px = self.last_price(symbol, marks)
        return px if px > 0 else avg

    def short_exposure(self, marks: Mapping[str, Decimal]) -> Decimal:
        return sum(
            (
                -p.quantity * self._price_or_avg(s, p.average_price, marks)
                for (s, _), p in self.positions.items()
                if p.quantity < 0
            ),
            ZERO,
        )

    def blocked_by_orders(self, marks: Mapping[str, Decimal]) -> Decimal:
        # Only orders placed through place_order block cash: gateway orders are the gateway's and the
        # strategy engine's to reserve (blocking them here too would count them twice).
        total = ZERO
        for o in self.orders.values():
            if o.source == "mcp" and o.transaction_type == "BUY" and o.status not in _TERMINAL:
                total += self._funds_needed(o, marks)
        return total

    def _mis_long(self, marks: Mapping[str, Decimal]) -> tuple[Decimal, Decimal]:
        """(value, margin) of the intraday (MIS) long positions at the last price."""
        value = ZERO
        for (s, product), p in self.positions.items():
            if product == "MIS" and p.quantity > 0:
                value += p.quantity * self._price_or_avg(s, p.average_price, marks)
        return value, value * self.mis_margin

    def live_balance(self, marks: Mapping[str, Decimal]) -> Decimal:
        """Free to trade: cash + MIS long value − (short exposure + MIS margin + blocked by orders)."""
        value, span = self._mis_long(marks)
        return self.cash + value - span - self.short_exposure(marks) - self.blocked_by_orders(marks)

    # -- views (Kite Connect shapes) -------------------------------------------------------
    def profile(self) -> dict[str, Any]:
        s = self.seed
        return {
            "user_id": s.user_id,
            "user_name": s.user_name,
            "user_shortname": s.user_shortname,
            "email": s.email,
            "user_type": s.user_type,
            "broker": s.broker,
            "exchanges": list(s.exchanges),
            "products": list(s.products),
            "order_types": list(s.order_types),
            "avatar_url": None,
            "meta": {"demat_consent": "physical"},
        }

    def margins(self, marks: Mapping[str, Decimal]) -> dict[str, Any]:
        exposure = self.short_exposure(marks)
        blocked = self.blocked_by_orders(marks)
        mis_value, span = self._mis_long(marks)
        debits = exposure + span + blocked
        live = self.cash + mis_value - debits
        realised = sum((p.realised for p in self.positions.values()), ZERO)
        unrealised = sum(
            (p.unrealised(self._price_or_avg(s, p.average_price, marks)) for (s, _), p in self.positions.items()),
            ZERO,
        )
        turnover = sum((p.buy_value + p.sell_value for p in self.positions.values()), ZERO)
        return {
            "equity": {
                "enabled": True,
                "net": dec_str(live),
                "available": {
                    "adhoc_margin": "0",
                    "cash": dec_str(self.cash),
                    "opening_balance": dec_str(self.initial_cash),
                    "live_balance": dec_str(live),
                    "collateral": "0",
                    "intraday_payin": "0",
                },
                "utilised": {
                    "debits": dec_str(debits),
                    "exposure": dec_str(exposure),
                    "span": dec_str(span),
                    "option_premium": "0",
                    "holding_sales": "0",
                    "turnover": dec_str(turnover),
                    "m2m_realised": dec_str(realised),
                    "m2m_unrealised": dec_str(unrealised),
                    "payout": "0",
                    "delivery": dec_str(blocked),
                    "charges": dec_str(self.charges),
                },
            },
            "commodity": {"enabled": False, "net": "0", "available": {}, "utilised": {}},
        }

    def holdings_view(self, marks: Mapping[str, Decimal]) -> list[dict[str, Any]]:
        out = []
        for sym, h in self.holdings.items():
            last = self._price_or_avg(sym, h.average_price, marks)
            used = min(h.quantity, max(-self.net_quantity(sym), ZERO))
            out.append(
                {
                    "tradingsymbol": sym,
                    "exchange": h.exchange,
                    "instrument_token": 0,
                    "isin": h.isin,
                    "product": "CNC",
                    "price": "0",
                    "quantity": dec_str(h.quantity),
                    "used_quantity": dec_str(used),
                    "t1_quantity": "0",
                    "realised_quantity": dec_str(h.quantity),
                    "opening_quantity": dec_str(h.quantity),
                    "collateral_quantity": "0",
                    "average_price": dec_str(h.average_price),
                    "last_price": dec_str(last),
                    "close_price": dec_str(last),
                    "pnl": dec_str((last - h.average_price) * h.quantity),
                    "day_change": "0",
                    "day_change_percentage": "0",
                }
            )
        return out

    def positions_view(self, marks: Mapping[str, Decimal]) -> dict[str, list[dict[str, Any]]]:
        rows = []
        for (sym, _), p in self.positions.items():
            last = self._price_or_avg(sym, p.average_price, marks)
            unrealised = p.unrealised(last)
            pnl = p.realised + unrealised
            rows.append(
                {
                    "tradingsymbol": sym,
                    "exchange": p.exchange,
                    "instrument_token": 0,
                    "product": p.product,
                    "quantity": dec_str(p.quantity),
                    "overnight_quantity": "0",
                    "multiplier": "1",
                    "margin": dec_str(abs(p.quantity) * last * self.margin_rate(p.product)),
                    "average_price": dec_str(p.average_price),
                    "close_price": "0",
                    "last_price": dec_str(last),
                    "value": dec_str(p.sell_value - p.buy_value),
                    "pnl": dec_str(pnl),
                    "m2m": dec_str(pnl),
                    "unrealised": dec_str(unrealised),
                    "realised": dec_str(p.realised),
                    "charges": dec_str(p.charges),
                    "buy_quantity": dec_str(p.buy_quantity),
                    "buy_price": dec_str(p.buy_value / p.buy_quantity if p.buy_quantity else ZERO),
                    "buy_value": dec_str(p.buy_value),
                    "sell_quantity": dec_str(p.sell_quantity),
                    "sell_price": dec_str(p.sell_value / p.sell_quantity if p.sell_quantity else ZERO),
                    "sell_value": dec_str(p.sell_value),
                    "day_buy_quantity": dec_str(p.buy_quantity),
                    "day_buy_value": dec_str(p.buy_value),
                    "day_sell_quantity": dec_str(p.sell_quantity),
                    "day_sell_value": dec_str(p.sell_value),
                }
            )
        # Every position of the mock is opened in this session (no overnight carry), so day == net.
        return {"net": rows, "day": [dict(r) for r in rows]}

    def orders_view(self) -> list[dict[str, Any]]:
        return [o.view() for o in self.orders.values()]

    def trades_view(self) -> list[dict[str, Any]]:
        return [t.view() for t in self.trades]

    def _instrument_keys(self, instruments: Any) -> list[tuple[str, str]]:
        if isinstance(instruments, str):
            instruments = [instruments]
        if not isinstance(instruments, list) or not instruments:
            raise InvalidOrder("instruments must be a non-empty list like ['SIM:AAA'] or ['AAA']")
        if len(instruments) > MAX_INSTRUMENTS:
            raise InvalidOrder(f"at most {MAX_INSTRUMENTS} instruments per call")
        out = []
        for key in instruments:
            if not isinstance(key, str) or not key.strip() or len(key) > 81:
                raise InvalidOrder(f"instrument {key!r} must be 'EXCHANGE:SYMBOL' or 'SYMBOL'")
            out.append((key, key.split(":", 1)[1] if ":" in key else key))
        return out

    def ltp_view(self, instruments: Any, marks: Mapping[str, Decimal]) -> dict[str, Any]:
        """Kite's ``ltp``: {key: {"instrument_token", "last_price"}}; symbols with no price are left out."""
        out = {}
        for key, sym in self._instrument_keys(instruments):
            px = self.last_price(sym, marks)
            if px > 0:
                out[key] = {"instrument_token": 0, "last_price": dec_str(px)}
        return out

    def quotes_view(self, instruments: Any, marks: Mapping[str, Decimal]) -> dict[str, Any]:
        """Kite's ``quote`` from the marks seen this session (open/high/low of the marks, no depth);
        symbols with no price are left out."""
        out = {}
        for key, sym in self._instrument_keys(instruments):
            last = self.last_price(sym, marks)
            if not last > 0:
                continue
            q = self.quotes.get(sym) or _Quote(last, last, last, last, 0)
            traded = sum((t.quantity for t in self.trades if t.tradingsymbol == sym), ZERO)
            out[key] = {
                "instrument_token": 0,
                "timestamp": _ts(q.ts),
                "last_trade_time": _ts(q.ts),
                "last_price": dec_str(last),
                "last_quantity": "0",
                "buy_quantity": "0",
                "sell_quantity": "0",
                "volume": dec_str(traded),
                "average_price": "0",
                "oi": "0",
                "net_change": dec_str(last - q.open),
                "lower_circuit_limit": "0",
                "upper_circuit_limit": "0",
                "ohlc": {"open": dec_str(q.open), "high": dec_str(max(q.high, last)),
                         "low": dec_str(min(q.low, last)), "close": dec_str(q.open)},
                "depth": {"buy": [], "sell": []},
            }
        return out


@dataclass(slots=True)
class _Quote:
    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    ts: int


def _check_variety(variety: str) -> None:
    if variety not in _VARIETIES:
        raise InvalidOrder(f"variety must be one of {sorted(_VARIETIES)}, not {variety!r}")


def _finite(name: str, value: Any) -> Decimal:
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError) as e:
        raise InvalidOrder(f"{name} must be a decimal number, not {value!r}") from e
    if not d.is_finite():
        raise InvalidOrder(f"{name} must be finite")
    return d
