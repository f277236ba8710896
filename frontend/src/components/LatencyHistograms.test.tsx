import { render, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { fmtUs, LatencyHistograms } from "./LatencyHistograms";

const T2S = {
  stage: "tick_to_signal", count: 2000, p50: 12, p99: 3001, p999: 3001, max: 40_031, instances: 2, unreadable: 0,
  buckets: [
    { ge_us: 10, lt_us: 20, count: 1969 },
    { ge_us: 20, lt_us: 50, count: 0 },
    { ge_us: 50, lt_us: 100, count: 0 },
    { ge_us: 100, lt_us: 200, count: 0 },
    { ge_us: 200, lt_us: 500, count: 0 },
    { ge_us: 500, lt_us: 1000, count: 0 },
    { ge_us: 1000, lt_us: 2000, count: 0 },
    { ge_us: 2000, lt_us: 5000, count: 30 },
    { ge_us: 5000, lt_us: 10000, count: 0 },
    { ge_us: 10000, lt_us: 20000, count: 0 },
    { ge_us: 20000, lt_us: 50000, count: 1 },
  ],
};
const EMPTY = { stage: "signal_to_intent", count: 0, p50: 0, p99: 0, p999: 0, max: 0, instances: 0, unreadable: 1, buckets: [] };

describe("fmtUs", () => {
  it("reads µs, ms and s", () => {
    expect([fmtUs(850), fmtUs(3001), fmtUs(40_031), fmtUs(1_500_000)]).toEqual(["850 µs", "3.00 ms", "40.0 ms", "1.50 s"]);
  });
});

describe("LatencyHistograms", () => {
  it("shows each stage's p50 / p99 / p999 / max and one bar per bucket, the tail coloured apart", () => {
    render(<LatencyHistograms stages={[T2S, EMPTY]} />);
    const t2s = screen.getByRole("article", { name: "Tick → signal latency" });
    expect(within(t2s).getByTestId("tick_to_signal-p50")).toHaveTextContent("12 µs");
    expect(within(t2s).getByTestId("tick_to_signal-p99")).toHaveTextContent("3.00 ms");
    expect(within(t2s).getByTestId("tick_to_signal-p999")).toHaveTextContent("3.00 ms");
    expect(within(t2s).getByTestId("tick_to_signal-max")).toHaveTextContent("40.0 ms");
    expect(t2s).toHaveTextContent("2,000 recorded · 2 instances");
    const bars = within(t2s).getAllByTestId("latency-bar");
    expect(bars).toHaveLength(11);
    const rect = (i: number) => bars[i].querySelector("rect")!;
    expect(rect(0)).toHaveClass("body");
    expect(rect(7)).toHaveClass("body"); // holds p99 (= p999 here): values up to p99 are in it
    expect(rect(10)).toHaveClass("tail"); // starts above p999: only the slowest
    expect(Number(rect(1).getAttribute("height"))).toBe(0); // an empty bucket has no bar
    // log scale: the 1 slow one is still visible, and shorter than the 30 and the 1,969
    const hs = [0, 7, 10].map((i) => Number(rect(i).getAttribute("height")));
    expect(hs[0]).toBeGreaterThan(hs[1]);
    expect(hs[1]).toBeGreaterThan(hs[2]);
    expect(hs[2]).toBeGreaterThan(0);
    expect(bars[10].querySelector("title")).toHaveTextContent("20.0 ms – 50.0 ms: 1");

    const empty = screen.getByRole("article", { name: "Signal → intent latency" });
    expect(empty).toHaveTextContent("No latencies recorded yet.");
    expect(empty).toHaveTextContent("1 saved histogram(s) could not be read.");
    expect(within(empty).queryAllByTestId("latency-bar")).toHaveLength(0);
  });

  it("colours buckets wholly above p99 amber and wholly above p999 red", () => {
    const stage = {
      ...T2S, count: 1000, p50: 12, p99: 150, p999: 1500, max: 30_000,
      buckets: [
        { ge_us: 10, lt_us: 20, count: 980 },
        { ge_us: 100, lt_us: 200, count: 15 },
        { ge_us: 1000, lt_us: 2000, count: 4 },
        { ge_us: 20000, lt_us: 50000, count: 1 },
      ],
    };
    render(<LatencyHistograms stages={[stage]} />);
    const classes = screen.getAllByTestId("latency-bar").map((g) => g.querySelector("rect")!.getAttribute("class"));
    expect(classes).toEqual(["bar body", "bar body", "bar p99", "bar tail"]);
  });

  it("redraws with the next poll's figures", () => {
    const { rerender } = render(<LatencyHistograms stages={[T2S]} />);
    rerender(<LatencyHistograms stages={[{ ...T2S, count: 2500, p50: 850, buckets: [{ ge_us: 500, lt_us: 1000, count: 2500 }] }]} />);
    expect(screen.getByTestId("tick_to_signal-p50")).toHaveTextContent("850 µs");
    expect(screen.getAllByTestId("latency-bar")).toHaveLength(1);
    expect(screen.getByRole("article", { name: "Tick → signal latency" })).toHaveTextContent("2,500 recorded");
  });
});
