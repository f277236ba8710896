import createClient from "openapi-fetch";
import { vi } from "vitest";
import type { paths } from "../api/schema";

/** One request the page made: method, path, query and parsed body (JSON or form fields). */
export interface Call {
  method: string;
  path: string;
  query: Record<string, string>;
  body: unknown;
}

type Answer = { status?: number; body: unknown } | unknown;
type Route = (call: Call) => Answer;

/**
 * A typed client whose fetch answers from `routes` ("GET /backtests" -> the body, or
 * {status, body}); every call is recorded. An unrouted request is a 404 in the API's error shape,
 * so a page calling something the test did not expect shows it.
 */
export function fakeApi(routes: Record<string, Route | unknown>) {
  const calls: Call[] = [];
  const fetchImpl = vi.fn(async (req: Request) => {
    const url = new URL(req.url);
    let body: unknown = null;
    const type = req.headers.get("Content-Type") ?? "";
    if (type.includes("application/json")) body = await req.json();
    else if (type.includes("multipart/form-data")) {
      const form = await req.formData();
      body = Object.fromEntries([...form.entries()].map(([k, v]) => [k, typeof v === "string" ? v : `file:${(v as File).name}`]));
    }
    const call = { method: req.method, path: url.pathname, query: Object.fromEntries(url.searchParams), body };
    calls.push(call);
    const route = routes[`${req.method} ${url.pathname}`];
    if (route === undefined) return json(404, { error: { code: "not_found", message: `no route ${req.method} ${url.pathname}` } });
    const answer = typeof route === "function" ? (route as Route)(call) : route;
    const full = answer && typeof answer === "object" && "status" in answer && "body" in answer ? (answer as { status: number; body: unknown }) : { status: 200, body: answer };
    return json(full.status, full.body);
  });
  const api = createClient<paths>({ baseUrl: "http://api", fetch: fetchImpl as unknown as typeof fetch });
  return { api, calls, writes: () => calls.filter((c) => c.method !== "GET") };
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });
}
