/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The panel lives under /ui/ (the API's own paths — /health, /models, /jobs … — stay the API's).
// In development every other path, /ws included, goes to the API (AITRADER_PANEL_API, default :8000).
const api = process.env.AITRADER_PANEL_API ?? "http://127.0.0.1:8000";

export default defineConfig({
  base: "/ui/",
  plugins: [react()],
  server: {
    port: 5173,
    strictPort: true,
    proxy: {
      "^/ws$": { target: api, ws: true, changeOrigin: true },
      "^/(?!ui(/|$)).*": { target: api, changeOrigin: true },
    },
  },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
  },
});
