import { lazy, Suspense } from "react";
import type { SeriesMarker, UTCTimestamp } from "lightweight-charts";
import type { PriceBook, PriceMarker } from "../live/prices";

const BUY = "#22c55e";
const SELL = "#ef4444";
const MAX_LABELS = 8;

/**
 * The chart's markers for a symbol: an up arrow under the line for a BUY signal, a down arrow above
 * it for a SELL, a circle at the fill's price for a fill (the shape tells them apart, not only the
 * colour). Sorted by time, as the chart requires. Texts only when there are at most 8 markers.
 */
export function chartMarkers(markers: PriceMarker[]): SeriesMarker<UTCTimestamp>[] {
  // labels only while they are few: dozens of them in a burst pile up into an unreadable column
  const labelled = markers.length <= MAX_LABELS;
  return [...markers]
    .sort((a, b) => a.time - b.time)
    .map((m): SeriesMarker<UTCTimestamp> => {
      const color = m.side === "BUY" ? BUY : SELL;
      const time = m.time as UTCTimestamp;
      m = labelled ? m : { ...m, text: "" };
      if (m.kind === "fill" && Number.isFinite(m.price)) {
        return { time, position: "atPriceMiddle", price: m.price, shape: "circle", color, text: m.text };
      }
      if (m.kind === "fill") return { time, position: "inBar", shape: "circle", color, text: m.text };
      return m.side === "BUY"
        ? { time, position: "belowBar", shape: "arrowUp", color, text: m.text }
        : { time, position: "aboveBar", shape: "arrowDown", color, text: m.text };
    });
}

// lightweight-charts is most of the panel's code: loaded with the chart, not with the first page.
const PriceChartView = lazy(() => import("./PriceChartView"));

/** One symbol's price line (the chart library loads on first use; its place is kept meanwhile). */
export function PriceChart({ book, symbol }: { book: PriceBook; symbol: string }) {
  return (
    <Suspense
      fallback={
        <div className="price-chart chart-loading" data-testid="price-chart-loading" aria-busy="true">
          Loading chart…
        </div>
      }
    >
      <PriceChartView book={book} symbol={symbol} />
    </Suspense>
  );
}
