import createClient from "openapi-fetch";
import type { paths } from "./schema";
import { ApiFailure, type Session } from "./session";

export type Api = ReturnType<typeof makeApi>;

/** The typed client (paths and bodies from the generated schema), authenticated by the session. */
export function makeApi(session: Session) {
  return createClient<paths>({ baseUrl: location.origin, fetch: session.authedFetch });
}

/** The data of an openapi-fetch answer, or the API's error ({"error": {code, message}}) as an ApiFailure. */
export async function ok<T>(p: Promise<{ data?: T; error?: unknown; response: Response }>): Promise<T> {
  const { data, error, response } = await p;
  if (response.ok && data !== undefined) return data;
  const e = (error as { error?: { code?: string; message?: string } } | undefined)?.error;
  throw new ApiFailure(
    response.status,
    e?.code ?? `http_${response.status}`,
    e?.message ?? `${response.status} ${response.statusText || "error"}`,
  );
}
