import { useEffect, useState } from "react";
import type { LiveStatus } from "../live/socket";

/** Shown while the live socket is down (or reconnecting after a drop); hidden while it is live. */
export function ConnectionBanner({ status }: { status: LiveStatus }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (status.kind !== "down") return;
    const t = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(t);
  }, [status]);

  if (status.kind === "live" || (status.kind === "connecting" && status.attempt === 0)) return null;
  const text =
    status.kind === "down"
      ? `Live updates disconnected (${status.reason}). Reconnecting in ${Math.max(0, Math.ceil((status.retryAt - now) / 1000))} s…`
      : `Live updates disconnected. Reconnecting (attempt ${status.attempt})…`;
  return (
    <div className="banner" role="alert" aria-live="assertive">
      <span className="dot bad" aria-hidden="true" /> {text} Figures on screen may be stale.
    </div>
  );
}
