import { act, render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { PriceBook, type DrawScheduler } from "../live/prices";

// The chart library draws on a canvas, which jsdom lacks: record what the component hands it.
const lib = vi.hoisted(() => ({ setData: vi.fn(), setMarkers: vi.fn(), remove: vi.fn(), fitContent: vi.fn() }));
vi.mock("lightweight-charts", () => ({
  LineSeries: "Line",
  createChart: () => ({ addSeries: () => ({ setData: lib.setData }), remove: lib.remove, timeScale: () => ({ fitContent: lib.fitContent }) }),
  createSeriesMarkers: () => ({ setMarkers: lib.setMarkers }),
}));

const { PriceChart, chartMarkers } = await import("./PriceChart");

describe("chartMarkers", () => {
  it("draws BUY signals as up arrows, SELL as down arrows, fills as circles at their price, in time order", () => {
    const out = chartMarkers([
      { time: 3, kind: "fill", side: "BUY", price: 10.5, text: "fill 1 @ 10.5" },
      { time: 1, kind: "signal", side: "BUY", price: 10, text: "breakout" },
      { time: 2, kind: "signal", side: "SELL", price: 11, text: "reversal" },
    ]);
    expect(out.map((m) => [m.time, m.shape, m.position])).toEqual([
      [1, "arrowUp", "belowBar"],
      [2, "arrowDown", "aboveBar"],
      [3, "circle", "atPriceMiddle"],
    ]);
    expect(out[2]).toMatchObject({ price: 10.5 });
    expect(out[0].text).toBe("breakout");
  });

  it("drops the texts when more than 8 markers would pile up, keeping the shapes", () => {
    const many = Array.from({ length: 9 }, (_, i) => ({ time: i, kind: "signal" as const, side: "BUY" as const, price: 10, text: "breakout" }));
    expect(chartMarkers(many).map((m) => [m.shape, m.text])).toEqual(Array(9).fill(["arrowUp", ""]));
    expect(chartMarkers(many.slice(1)).every((m) => m.text === "breakout")).toBe(true);
  });
});

describe("PriceChart", () => {
  it("draws the chosen symbol's points and markers when the book flushes, and frees the chart on unmount", async () => {
    let flush = () => {};
    const sched: DrawScheduler = { request: (d) => void (flush = d), cancel: () => {} };
    let now = 10_000;
    const book = new PriceBook(sched, () => now);
    const { unmount } = render(<PriceChart book={book} symbol="AAA" />);
    // the library is loaded on first use (its own chunk): a placeholder holds the place meanwhile
    expect(screen.getByTestId("price-chart-loading")).toBeInTheDocument();
    expect(await screen.findByRole("img", { name: "AAA price, with signals and fills marked" }, { timeout: 5_000 })).toBeInTheDocument();
    await waitFor(() => expect(lib.setData).toHaveBeenLastCalledWith([])); // drawn once mounted (an effect)
    book.push({ channel: "ticks", data: { symbol: "AAA", price: 10 } });
    book.push({ channel: "ticks", data: { symbol: "BBB", price: 99 } });
    now += 1000;
    book.push({ channel: "ticks", data: { symbol: "AAA", price: 11 } });
    book.push({ channel: "signals", data: { symbol: "AAA", side: "SELL", price: 11, detector: "d" } });
    expect(lib.setData).toHaveBeenCalledTimes(1); // nothing drawn before the frame
    act(() => flush());
    expect(lib.setData).toHaveBeenLastCalledWith([
      { time: 10, value: 10 },
      { time: 11, value: 11 },
    ]);
    expect(lib.setMarkers).toHaveBeenLastCalledWith([expect.objectContaining({ time: 11, shape: "arrowDown" })]);
    expect(lib.fitContent).toHaveBeenCalled(); // two points: spread over the width
    unmount();
    expect(lib.remove).toHaveBeenCalledTimes(1);
  });
});
