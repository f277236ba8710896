import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { App } from "./App";
import { Session } from "./api/session";
import { AppProvider } from "./context";
import { LiveSocket } from "./live/socket";
import "./styles.css";

const theme = localStorage.getItem("aitrader.theme");
if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;

const session = new Session();
const socket = new LiveSocket(["ticks", "signals", "orders", "fills", "pnl", "alerts"], {
  token: async (fresh) => {
    if (fresh && !(await session.refresh())) return null;
    return session.current?.access ?? null;
  },
});

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <AppProvider session={session} socket={socket}>
      <App />
    </AppProvider>
  </StrictMode>,
);
