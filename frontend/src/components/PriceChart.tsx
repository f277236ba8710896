import { useEffect, useRef } from "react";
import { createChart, createSeriesMarkers, LineSeries, type SeriesMarker, type UTCTimestamp } from "lightweight-charts";
import type { PriceBook, PriceMarker } from "../live/prices";

const BUY = "#22c55e";
const SELL = "#ef4444";

/**
 * The chart's markers for a symbol: an up arrow under the line for a BUY signal, a down arrow above
 * it for a SELL, a circle at the fill's price for a fill (the shape tells them apart, not only the
 * colour). Sorted by time, as the chart requires.
 */
export function chartMarkers(markers: PriceMarker[]): SeriesMarker<UTCTimestamp>[] {
  return [...markers]
    .sort((a, b) => a.time - b.time)
    .map((m): SeriesMarker<UTCTimestamp> => {
      const color = m.side === "BUY" ? BUY : SELL;
      const time = m.time as UTCTimestamp;
      if (m.kind === "fill" && Number.isFinite(m.price)) {
        return { time, position: "atPriceMiddle", price: m.price, shape: "circle", color, text: m.text };
      }
      if (m.kind === "fill") return { time, position: "inBar", shape: "circle", color, text: m.text };
      return m.side === "BUY"
        ? { time, position: "belowBar", shape: "arrowUp", color, text: m.text }
        : { time, position: "aboveBar", shape: "arrowDown", color, text: m.text };
    });
}

/** One symbol's price line from the book, redrawn when the book says it changed (a few times a second at most). */
export function PriceChart({ book, symbol }: { book: PriceBook; symbol: string }) {
  const host = useRef<HTMLDivElement>(null);

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const dark = document.documentElement.dataset.theme !== "light";
    const chart = createChart(el, {
      autoSize: true,
      layout: { background: { color: "transparent" }, textColor: dark ? "#cbd5e1" : "#1e293b" },
      grid: { vertLines: { visible: false }, horzLines: { color: dark ? "rgba(148,163,184,0.15)" : "rgba(15,23,42,0.08)" } },
      timeScale: { timeVisible: true, secondsVisible: true },
    });
    const series = chart.addSeries(LineSeries, { color: "#60a5fa", lineWidth: 2 });
    const markers = createSeriesMarkers(series, []);
    const draw = () => {
      const s = book.get(symbol);
      series.setData(s.points.map((p) => ({ time: p.time as UTCTimestamp, value: p.value })));
      markers.setMarkers(chartMarkers(s.markers));
    };
    draw();
    const off = book.subscribe(draw);
    return () => {
      off();
      chart.remove();
    };
  }, [book, symbol]);

  return <div ref={host} className="price-chart" data-testid="price-chart" role="img" aria-label={`${symbol} price, with signals and fills marked`} />;
}
