import { createContext, useContext, useEffect, useMemo, useState, type ReactNode } from "react";
import { makeApi, type Api } from "./api/client";
import type { Session, SessionState, SignedOutReason } from "./api/session";
import { LiveSocket, type LiveStatus } from "./live/socket";

interface Ctx {
  session: Session;
  api: Api;
  socket: LiveSocket;
}

const AppContext = createContext<Ctx | null>(null);

export function AppProvider({ session, socket, children }: { session: Session; socket: LiveSocket; children: ReactNode }) {
  const value = useMemo(() => ({ session, api: makeApi(session), socket }), [session, socket]);
  return <AppContext.Provider value={value}>{children}</AppContext.Provider>;
}

export function useApp(): Ctx {
  const c = useContext(AppContext);
  if (!c) throw new Error("useApp outside AppProvider");
  return c;
}

/** The signed-in user (null when signed out) and why the last session ended. */
export function useSession(): { user: SessionState | null; why: SignedOutReason | null } {
  const { session } = useApp();
  const [state, setState] = useState({ user: session.current, why: null as SignedOutReason | null });
  useEffect(() => session.subscribe((user, why) => setState({ user, why })), [session]);
  return state;
}

export function useLiveStatus(): LiveStatus {
  const { socket } = useApp();
  const [s, setS] = useState(socket.status);
  useEffect(() => socket.onStatus(setS), [socket]);
  return s;
}

/** Call `load` now and every `everyMs`; the latest result or error. `reload` runs it at once. */
export function usePoll<T>(load: () => Promise<T>, everyMs: number, deps: unknown[] = []) {
  const [data, setData] = useState<T | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    const run = () =>
      load().then(
        (d) => live && (setData(d), setError(null)),
        (e: Error) => live && setError(e.message),
      );
    void run();
    const t = setInterval(run, everyMs);
    return () => {
      live = false;
      clearInterval(t);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [everyMs, tick, ...deps]);
  return { data, error, reload: () => setTick((n) => n + 1) };
}
