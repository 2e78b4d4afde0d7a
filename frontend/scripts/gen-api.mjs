// Regenerate the API types from the gateway's OpenAPI document.
//   node scripts/gen-api.mjs          -> writes openapi.json and src/api/schema.d.ts
//   node scripts/gen-api.mjs --check  -> generates into a temp folder, fails when they differ
// The Python side (../scripts/gen_api_types.py) needs the repo's virtualenv: $PYTHON, else
// ../.venv/bin/python, else python3.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const frontend = resolve(here, "..");
const repo = resolve(frontend, "..");
const check = process.argv.includes("--check");
const python =
  process.env.PYTHON ?? (existsSync(join(repo, ".venv/bin/python")) ? join(repo, ".venv/bin/python") : "python3");
const committed = { openapi: join(frontend, "openapi.json"), schema: join(frontend, "src/api/schema.d.ts") };
const work = check ? mkdtempSync(join(tmpdir(), "lm-saes-api-")) : null;
const out = work ? { openapi: join(work, "openapi.json"), schema: join(work, "schema.d.ts") } : committed;
const env = { ...process.env, HF_HUB_OFFLINE: "1" };

try {
  execFileSync(python, [join(repo, "scripts/gen_api_types.py"), "--out", out.openapi], { stdio: "inherit", env });
  const cli = join(frontend, "node_modules/openapi-typescript/bin/cli.js");
  execFileSync(process.execPath, [cli, out.openapi, "--output", out.schema], { stdio: "inherit", env });
  if (check) {
    const drifted = Object.keys(committed).filter(
      (k) => !existsSync(committed[k]) || readFileSync(committed[k], "utf8") !== readFileSync(out[k], "utf8"),
    );
    if (drifted.length) {
      console.error(
        `API types drifted from the gateway: ${drifted.map((k) => committed[k]).join(", ")}\n` +
          "Run `npm run gen:api` and commit the result.",
      );
      process.exitCode = 1;
    } else {
      console.log("API types match the gateway's OpenAPI document.");
    }
  }
} finally {
  if (work) rmSync(work, { recursive: true, force: true });
}
