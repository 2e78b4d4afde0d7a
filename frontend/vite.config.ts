import react from "@vitejs/plugin-react";
import type { Plugin } from "vite";
import { defineConfig } from "vitest/config";

/** The gateway serves dist/ with Starlette's StaticFiles(html=True), which answers unknown paths
 * with 404.html: a copy of index.html makes deep links (/saes/x/features/3) load the app. */
function spaFallback(): Plugin {
  return {
    name: "spa-404-fallback",
    apply: "build",
    enforce: "post",
    generateBundle(_options, bundle) {
      const index = bundle["index.html"];
      if (index && index.type === "asset") this.emitFile({ type: "asset", fileName: "404.html", source: index.source });
    },
  };
}

// `npm run dev` proxies the API to a gateway on :8000 (`python -m gateway` / `make up`);
// `npm run build` writes dist/, which the gateway serves on / (LM_SAES_STATIC_DIR).
export default defineConfig({
  plugins: [react(), spaFallback()],
  server: {
    proxy: { "/api": { target: "http://127.0.0.1:8000", changeOrigin: true } },
  },
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1024 },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["./src/test/setup.ts"],
    css: false,
  },
});
