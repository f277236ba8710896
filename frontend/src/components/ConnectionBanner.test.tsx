import { act, render, screen } from "@testing-library/react";
import { afterEach, describe, expect, it, vi } from "vitest";
import { LiveSocket, type LiveStatus } from "../live/socket";
import { ConnectionBanner } from "./ConnectionBanner";
import { useEffect, useState } from "react";

/** A WebSocket stand-in the test drives: it records what the client sends and closes on demand. */
class FakeSocket {
  static made: FakeSocket[] = [];
  sent: string[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((e: { data: string }) => void) | null = null;
  onclose: ((e: { code: number; reason: string }) => void) | null = null;
  constructor(public url: string) {
    FakeSocket.made.push(this);
  }
  send(s: string) {
    this.sent.push(s);
  }
  close() {}
  welcome() {
    this.onopen?.();
    this.onmessage?.({ data: JSON.stringify({ channel: "system", data: { type: "welcome" } }) });
  }
  drop(code = 1006) {
    this.onclose?.({ code, reason: "" });
  }
}

function Harness({ socket }: { socket: LiveSocket }) {
  const [s, setS] = useState<LiveStatus>(socket.status);
  useEffect(() => socket.onStatus(setS), [socket]);
  return <ConnectionBanner status={s} />;
}

afterEach(() => {
  vi.useRealTimers();
  FakeSocket.made = [];
});

describe("ConnectionBanner with LiveSocket", () => {
  it("hides while live, shows on a drop, reconnects with backoff and hides again", async () => {
    vi.useFakeTimers();
    const tokens: boolean[] = [];
    const socket = new LiveSocket(["fills"], {
      url: "ws://x/ws",
      token: async (fresh) => (tokens.push(fresh), fresh ? "fresh-token" : "token"),
      makeSocket: (u) => new FakeSocket(u) as unknown as WebSocket,
      baseDelayMs: 1000,
    });
    render(<Harness socket={socket} />);
    await act(async () => socket.start());
    expect(FakeSocket.made).toHaveLength(1);
    act(() => FakeSocket.made[0].welcome());
    expect(JSON.parse(FakeSocket.made[0].sent[0])).toEqual({ token: "token", channels: ["fills"] });
    expect(screen.queryByRole("alert")).toBeNull();

    act(() => FakeSocket.made[0].drop());
    expect(screen.getByRole("alert")).toHaveTextContent("Live updates disconnected (connection lost)");
    await act(() => vi.advanceTimersByTimeAsync(500));
    expect(FakeSocket.made).toHaveLength(1); // backoff: not yet
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(FakeSocket.made).toHaveLength(2);
    act(() => FakeSocket.made[1].drop()); // second failure waits longer (2 s ± 20 %)
    await act(() => vi.advanceTimersByTimeAsync(1500));
    expect(FakeSocket.made).toHaveLength(2);
    await act(() => vi.advanceTimersByTimeAsync(1000));
    expect(FakeSocket.made).toHaveLength(3);
    act(() => FakeSocket.made[2].welcome());
    expect(screen.queryByRole("alert")).toBeNull();
    socket.stop();
  });

  it("reconnects at once with a refreshed token after a 4401", async () => {
    vi.useFakeTimers();
    const tokens: boolean[] = [];
    const socket = new LiveSocket(["pnl"], {
      url: "ws://x/ws",
      token: async (fresh) => (tokens.push(fresh), fresh ? "fresh-token" : "token"),
      makeSocket: (u) => new FakeSocket(u) as unknown as WebSocket,
    });
    await act(async () => socket.start());
    act(() => FakeSocket.made[0].welcome());
    act(() => FakeSocket.made[0].drop(4401));
    await act(() => vi.advanceTimersByTimeAsync(0));
    expect(tokens).toEqual([false, true]);
    FakeSocket.made[1].welcome();
    expect(JSON.parse(FakeSocket.made[1].sent[0]).token).toBe("fresh-token");
    socket.stop();
  });
});
