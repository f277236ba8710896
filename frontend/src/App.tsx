import { useEffect, useMemo } from "react";
import { BrowserRouter, NavLink, Navigate, Route, Routes } from "react-router-dom";
import { ConnectionBanner } from "./components/ConnectionBanner";
import { KillSwitch } from "./components/KillSwitch";
import { LoginForm } from "./components/LoginForm";
import { ThemeToggle } from "./components/ThemeToggle";
import { useApp, useLiveStatus, useSession } from "./context";
import { Blotter } from "./live/blotter";
import { PriceBook } from "./live/prices";
import { HealthPage } from "./pages/HealthPage";
import { BacktestsPage } from "./pages/BacktestsPage";
import { JobsPage } from "./pages/JobsPage";
import { ModelsPage } from "./pages/ModelsPage";
import { LivePage } from "./pages/LivePage";

export const PAGES = [
  { path: "live", title: "Live" },
  { path: "health", title: "Health" },
  { path: "backtests", title: "Backtests" },
  { path: "models", title: "Models & strategies" },
  { path: "jobs", title: "Jobs & suggestions" },
] as const;

/** The panel: the login form while signed out, else the header (kill switch, theme, user) and the pages. */
export function App() {
  const { session, socket } = useApp();
  const { user, why } = useSession();
  const blotter = useMemo(() => new Blotter(), []);
  const prices = useMemo(() => new PriceBook(), []);
  const signedIn = user !== null;

  useEffect(() => {
    if (!signedIn) return;
    const off = socket.onMessage((m) => {
      blotter.push(m);
      prices.push(m);
    });
    socket.start();
    return () => {
      off();
      socket.stop();
    };
  }, [signedIn, socket, blotter, prices]);

  if (!user) return <LoginForm session={session} why={why} />;
  return (
    <BrowserRouter basename="/ui">
      <Shell blotter={blotter} prices={prices} />
    </BrowserRouter>
  );
}

function Shell({ blotter, prices }: { blotter: Blotter; prices: PriceBook }) {
  const { session, api } = useApp();
  const { user } = useSession();
  const live = useLiveStatus();
  if (!user) return null;
  return (
    <div className="shell">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <header className="glass topbar">
        <div className="brand">
          <span className="logo" aria-hidden="true">
            ◆
          </span>
          AITrader
        </div>
        <nav aria-label="Pages">
          {PAGES.map((p) => (
            <NavLink key={p.path} to={`/${p.path}`}>
              {p.title}
            </NavLink>
          ))}
        </nav>
        <div className="topbar-right">
          <KillSwitch api={api} role={user.role} />
          <span data-testid="live-status" className={`live-dot ${live.kind === "live" ? "good" : "bad"}`} title={`Live updates: ${live.kind}`}>
            <span className={`dot ${live.kind === "live" ? "good" : "bad"}`} aria-hidden="true" />
            {live.kind === "live" ? "Live" : "Offline"}
          </span>
          <ThemeToggle />
          <span className="user" aria-label={`Signed in as ${user.username} (${user.role})`}>
            {user.username} <span className="chip idle">{user.role}</span>
          </span>
          <button className="ghost" onClick={() => void session.logout()}>
            Sign out
          </button>
        </div>
      </header>
      <ConnectionBanner status={live} />
      <main id="main" tabIndex={-1}>
        <Routes>
          <Route path="/live" element={<LivePage blotter={blotter} prices={prices} />} />
          <Route path="/health" element={<HealthPage />} />
          <Route path="/backtests" element={<BacktestsPage />} />
          <Route path="/models" element={<ModelsPage />} />
          <Route path="/jobs" element={<JobsPage />} />
          <Route path="*" element={<Navigate to="/live" replace />} />
        </Routes>
      </main>
    </div>
  );
}
