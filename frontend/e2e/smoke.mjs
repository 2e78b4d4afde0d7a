// Smoke test against a running gateway that serves the built frontend:
//   node e2e/smoke.mjs http://127.0.0.1:8000
// Visits home -> the first SAE -> its first feature and saves screenshots to e2e/screenshots/.
import { mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const base = (process.argv[2] ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const shots = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const errors = [];
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => errors.push(String(e)));
  const step = async (name, fn) => {
    const started = Date.now();
    await fn();
    await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
    console.log(`ok ${name} (${Date.now() - started} ms) ${page.url()}`);
  };

  await step("1-home", async () => {
    await page.goto(`${base}/`);
    await page.getByRole("heading", { name: "Models and SAEs" }).waitFor();
  });
  await step("2-sae", async () => {
    await page.locator("main table a").first().click();
    await page.getByRole("heading", { name: "Features", exact: true }).waitFor();
    await page.locator(".feature-table tbody a").first().waitFor();
    await page.locator("figure.chart svg").first().waitFor();
  });
  await step("3-sae-sorted", async () => {
    await page.getByRole("button", { name: /Max activation/ }).click();
    await page.waitForURL(/sort=max_activation/);
    await page.locator(".feature-table tbody a").first().waitFor();
  });
  await step("4-feature", async () => {
    await page.locator(".feature-table tbody a").first().click();
    await page.getByRole("heading", { name: "Top activating contexts" }).waitFor();
    await page.locator(".token").first().waitFor();
  });
  await step("5-deep-link", async () => {
    const url = page.url();
    await page.goto(url); // a reload of a deep link must load the app again
    await page.getByRole("heading", { name: "Top activating contexts" }).waitFor();
  });
  await step("6-jobs", async () => {
    await page.goto(`${base}/jobs`);
    await page.getByRole("heading", { name: "Submit a job" }).waitFor();
  });
} finally {
  await browser.close();
}
if (errors.length) {
  console.error("page errors:\n" + errors.join("\n"));
  process.exit(1);
}
console.log(`screenshots in ${shots}`);
