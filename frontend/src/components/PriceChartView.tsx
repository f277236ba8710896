import { useEffect, useRef } from "react";
import { createChart, createSeriesMarkers, LineSeries, type UTCTimestamp } from "lightweight-charts";
import type { PriceBook } from "../live/prices";
import { chartMarkers } from "./PriceChart";

const FIT_UNDER = 150;

/** One symbol's price line from the book, redrawn when the book says it changed (a few times a second at most). */
export default function PriceChartView({ book, symbol }: { book: PriceBook; symbol: string }) {
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
      // the span drawn, in market time, for people's tools and the end-to-end test
      el.dataset.points = String(s.points.length);
      el.dataset.from = s.points.length ? new Date(s.points[0].time * 1000).toISOString() : "";
      el.dataset.to = s.points.length ? new Date(s.points[s.points.length - 1].time * 1000).toISOString() : "";
      // until the points fill the width, spread them over it (else a few seconds of a fast replay are a
      // sliver at the right edge); afterwards the user's zoom and scroll are left alone
      if (s.points.length < FIT_UNDER) chart.timeScale().fitContent();
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
