// End-to-end test of the dashboards against a running gateway that serves the built frontend:
//   node e2e/smoke.mjs http://127.0.0.1:8000
// (tests/e2e/test_browser.py runs it inside `make test` over a freshly trained tiny SAE.)
//
// home -> the SAE -> sort by max activation -> a feature (shaded tokens visible) -> reload of that
// deep link -> "try your text" (per-token activations, then one feature's shading) -> jobs: submit
// a training job from the editor, follow it until it succeeded with live curves -> the job list
// -> steering: the feature page's steer panel (default and steered text stream side by side), then
// "Open in steer page" (its settings in the URL, restored on reload) and steer from there.
// A screenshot of each step goes to $E2E_SCREENSHOTS (default e2e/screenshots/); a failed step
// saves <step>-FAILED.png, prints why and exits 1, as do page errors and failed API calls.
//
// Environment: E2E_TOKEN   API token with the read, compute and submit scopes (stored before the
//                          first load, for protected reads, then typed into the header)
//              E2E_SAE     SAE to open (default: the first one listed)
//              E2E_TEXT    text for the "try your text" page
//              E2E_JOB     JSON body to submit (default: the editor's training template as is)
//              E2E_JOB_TIMEOUT_MS  how long to wait for that job (default 90000)
//              E2E_STEER   "1": the steering steps must run; "0": skip them; unset: run them when the
//                          gateway's OpenAPI document has POST /api/v1/steer (needs the compute scope)
//              E2E_STEER_TIMEOUT_MS  how long one steered generation may take (default 60000)
//              E2E_SEARCH  a query: when set, also search features by meaning from the header's box,
//                          check the best hit (E2E_SEARCH_EXPECT: its explanation, if set) and open
//                          its feature page, which shows the explanation and its scores
//              E2E_TRANSCODERS  a transcoder set the tracing service can read: when set, also
//                          trace a prompt from the circuits page, open its graph, hover and pin a
//                          feature (its top examples shown), prune with the slider, run an
//                          intervention on the pinned feature, explain a link between two positions
//                          by its attention (the QK panel, opened by clicking the link, or from its
//                          toggle when no such link is drawn), and download the graph's JSON
//              E2E_COMPARE another SAE whose evaluation suites were stored against E2E_SAE (lm-saes eval
//                          --suite core,universality --sae-id E2E_SAE --compare-id it): when set, also
//                          open the comparison page (metrics table, trade-off plot, the pair's
//                          universality and feature partners), follow a partner to its feature page
//                          (its nearest features) and check the SAE page's evaluation suites
//              CHROMIUM    browser binary (default /usr/bin/chromium)
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const base = (process.argv[2] ?? "http://127.0.0.1:8000").replace(/\/$/, "");
const shots = process.env.E2E_SCREENSHOTS || join(dirname(fileURLToPath(import.meta.url)), "screenshots");
const token = process.env.E2E_TOKEN ?? "";
const text = process.env.E2E_TEXT || "Sparse autoencoders find features in text.";
const jobTimeout = Number(process.env.E2E_JOB_TIMEOUT_MS || 90_000);
const transcoders = process.env.E2E_TRANSCODERS ?? "";
const steerTimeout = Number(process.env.E2E_STEER_TIMEOUT_MS || 60_000);
mkdirSync(shots, { recursive: true });

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

/** Visible elements among `locator`'s matches whose background is not fully transparent. */
async function shaded(locator) {
  return locator.evaluateAll((elements) =>
    elements
      .filter((el) => {
        const box = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        const channels = (style.backgroundColor.match(/[\d.]+/g) ?? []).map(Number);
        const alpha = channels.length === 4 ? channels[3] : channels.length === 3 ? 1 : 0;
        return box.width > 0 && box.height > 0 && style.visibility !== "hidden" && alpha > 0;
      })
      .map((el) => ({ text: el.textContent, intensity: Number(el.dataset.intensity) })),
  );
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
const problems = [];
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  // With protected reads even the first page load needs the token: store it as the header form does.
  if (token) await page.addInitScript((t) => localStorage.setItem("lm-saes-token", t), token);
  page.setDefaultTimeout(20_000);
  page.on("pageerror", (e) => problems.push(`page error: ${e}`));
  page.on("console", (m) => m.type() === "error" && problems.push(`console error: ${m.text()}`));
  page.on("response", (r) => {
    if (r.url().includes("/api/") && r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });

  let n = 0;
  const step = async (name, fn) => {
    const label = `${++n}-${name}`;
    const started = Date.now();
    try {
      const detail = await fn();
      await page.screenshot({ path: join(shots, `${label}.png`), fullPage: true });
      console.log(`ok ${label} (${Date.now() - started} ms) ${page.url()}${detail ? ` · ${detail}` : ""}`);
    } catch (error) {
      await page.screenshot({ path: join(shots, `${label}-FAILED.png`), fullPage: true }).catch(() => {});
      throw new Failure(`step ${label} failed at ${page.url()}: ${error.message}`);
    }
  };
  const main = page.locator("main");
  const heading = (name, exact = true) => main.getByRole("heading", { name, exact });

  let saeId = process.env.E2E_SAE;
  await step("home", async () => {
    await page.goto(`${base}/`);
    await heading("Models and SAEs").waitFor();
    if (token) {
      await page.locator("#api-token").fill(token);
      await page.getByRole("button", { name: "Save" }).click();
      await page.locator(".token-form").getByText("saved").waitFor();
    }
    const links = main.locator("table tbody a");
    await links.first().waitFor();
    saeId ??= (await links.first().textContent()).trim();
    await main.getByRole("link", { name: saeId, exact: true }).waitFor();
    return `SAE ${saeId}`;
  });

  await step("sae", async () => {
    await main.getByRole("link", { name: saeId, exact: true }).click();
    await page.waitForURL(`${base}/saes/${encodeURIComponent(saeId)}`);
    await heading("Features").waitFor();
    await page.locator(".feature-table tbody a").first().waitFor();
    await page.locator("figure.chart svg").first().waitFor();
    const rows = await page.locator(".feature-table tbody tr").count();
    check(rows > 0, "the feature table has no rows");
    return `${rows} feature rows`;
  });

  await step("sae-sorted", async () => {
    await page.getByRole("button", { name: /Max activation/ }).click();
    await page.waitForURL(/sort=max_activation&order=desc/);
    await page.locator(".feature-table tbody a").first().waitFor();
  });

  let feature;
  await step("feature", async () => {
    const first = page.locator(".feature-table tbody a").first();
    feature = (await first.textContent()).replace(/\D/g, "");
    await first.click();
    await page.waitForURL(new RegExp(`/features/${feature}$`));
    await heading("Top activating contexts").waitFor();
    const tokens = page.locator("ol.examples").first().locator('[data-testid="token"]');
    await tokens.first().waitFor();
    const lit = await shaded(tokens);
    check(lit.length > 0, `no shaded token among ${await tokens.count()} tokens of the top contexts`);
    const peak = Math.max(...lit.map((t) => t.intensity));
    // the strongest context peaks at the feature's max activation: full intensity
    check(peak > 0.99, `the strongest shaded token has intensity ${peak}, expected 1`);
    await page.locator(".token-peak").first().waitFor();
    return `feature #${feature}: ${lit.length} shaded tokens`;
  });

  await step("feature-deep-link", async () => {
    await page.reload(); // a reload of a deep link must load the app again
    await heading("Top activating contexts").waitFor();
    check((await shaded(page.locator('ol.examples [data-testid="token"]'))).length > 0, "no shaded token after reload");
  });

  const searchQuery = process.env.E2E_SEARCH ?? "";
  if (searchQuery) {
    await step("search", async () => {
      const box = page.getByRole("searchbox", { name: "Search features" });
      await box.fill(searchQuery);
      await box.press("Enter");
      await page.waitForURL(/\/search\?q=/);
      const best = main.locator("table.search-hits tbody tr").first();
      await best.waitFor();
      const explanation = (await best.locator("td.explanation-cell").textContent()).trim();
      const expected = process.env.E2E_SEARCH_EXPECT ?? "";
      check(
        !expected || explanation === expected,
        `the best hit for ${JSON.stringify(searchQuery)} is ${JSON.stringify(explanation)}, expected ${JSON.stringify(expected)}`,
      );
      const hits = await main.locator("table.search-hits tbody tr").count();
      return `${hits} hits, best: ${JSON.stringify(explanation)}`;
    });

    await step("search-hit-feature", async () => {
      const best = main.locator("table.search-hits tbody tr").first();
      const explanation = (await best.locator("td.explanation-cell").textContent()).trim();
      const link = best.locator("td a").first();
      const index = (await link.textContent()).replace(/\D/g, "");
      await link.click();
      await page.waitForURL(new RegExp(`/features/${index}$`));
      await main.locator(".explanation-text").getByText(explanation, { exact: true }).waitFor();
      const scores = main.getByRole("table", { name: "Explanation scores" });
      await scores.waitFor();
      const rows = await scores.locator("tbody tr").count();
      check(rows === 3, `${rows} scorer rows (detection, fuzzing, embedding)`);
      return `feature #${index}`;
    });
  }

  await step("try-text", async () => {
    await page.locator(".crumbs").getByRole("link", { name: saeId, exact: true }).click();
    await main.getByRole("link", { name: "Try it on text" }).click();
    await heading(`Run ${saeId} on text`).waitFor();
    await page.locator("#try-text").fill(text);
    await page.getByRole("button", { name: "Run" }).click();
    await heading("Strongest features per token").waitFor();
    const rows = main.locator("table tbody tr");
    const count = await rows.count();
    check(count >= text.split(" ").length, `${count} token rows for ${JSON.stringify(text)}`);
    const chips = await main.locator("table tbody .feature-chip").allTextContents();
    const values = chips.map((c) => Number(c.split(":")[1]));
    check(chips.length >= count && values.every((v) => Number.isFinite(v)), `feature chips: ${chips.join(" ")}`);
    check(values.some((v) => v > 0), `no positive activation among ${chips.join(" ")}`);
    return `${count} tokens, ${chips.length} feature values`;
  });

  await step("try-one-feature", async () => {
    // the strongest feature on the first token fires there: its shading must show
    const strongest = (await main.locator("table tbody .feature-chip a").first().textContent()).replace(/\D/g, "");
    const rows = await main.locator("table tbody tr").count();
    await page.locator("#try-feature").fill(strongest);
    await page.getByRole("button", { name: "Run" }).click();
    await heading(new RegExp(`Feature #${strongest} per token`), false).waitFor();
    const tokens = main.locator('.shaded-text [data-testid="token"]');
    check((await tokens.count()) === rows, `${await tokens.count()} shaded-text tokens, ${rows} table rows`);
    const lit = await shaded(tokens);
    check(lit.length > 0, `feature #${strongest} shades no token`);
    return `feature #${strongest} on ${lit.length} of ${rows} tokens`;
  });

  const partner = process.env.E2E_COMPARE;
  if (partner) {
    await step("compare", async () => {
      await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Compare" }).click();
      await heading("Compare SAEs").waitFor();
      const metrics = main.getByRole("table", { name: "Metrics" });
      await metrics.getByRole("rowheader", { name: saeId, exact: true }).waitFor();
      const header = await metrics.locator("thead th").allTextContents();
      check(header.includes("KL divergence") && header.includes("Partners"), `metrics columns: ${header.join(", ")}`);
      const points = main.locator('figure[aria-label="Explained variance against L0"] .recharts-scatter-symbol');
      await points.first().waitFor();
      await page.getByRole("radio", { name: "CE loss recovered" }).click(); // a controlled radio: its checked state follows the URL a render later, so click, then wait for the new plot
      await main.locator('figure[aria-label="CE loss recovered against L0"] .recharts-scatter-symbol').first().waitFor();
      await page.getByLabel("SAE A").selectOption(saeId);
      await page.getByLabel("SAE B").selectOption(partner);
      await main.getByRole("table", { name: `Universality of ${saeId} and ${partner}` }).waitFor();
      const partners = main.getByRole("table", { name: `Partners in ${partner}` }).locator("tbody td:nth-child(3) a");
      await partners.first().waitFor();
      return `${await points.count()} SAEs plotted, ${await partners.count()} partner links on the first page`;
    });

    await step("compare-partner", async () => {
      const link = main.getByRole("table", { name: `Partners in ${partner}` }).locator("tbody td:nth-child(3) a").first();
      const index = (await link.textContent()).replace(/\D/g, "");
      await link.click();
      await page.waitForURL(new RegExp(`/saes/${encodeURIComponent(partner)}/features/${index}$`));
      await heading("Nearest features").waitFor();
      await main.getByRole("list", { name: "Similar decoder directions in this SAE" }).waitFor();
      const back = main.getByRole("list", { name: `Partners in ${saeId} (activation correlation)` }).getByRole("link");
      const count = await back.count();
      check(count > 0, `feature ${index} of ${partner} lists no partner in ${saeId}`);
      return `feature ${index} of ${partner}: ${count} partners in ${saeId}`;
    });

    await step("sae-evals", async () => {
      await page.goto(`${base}/saes/${encodeURIComponent(saeId)}`);
      const suites = main.getByRole("region", { name: "Evaluation suites" });
      await suites.getByRole("heading", { name: /^Core/ }).waitFor();
      await suites.locator('figure[aria-label="Feature density on held-out tokens (log10 bins)"] svg').waitFor();
      await suites.getByRole("heading", { name: `Universality against ${partner}` }).waitFor();
      const kl = await suites.locator("dt", { hasText: "KL divergence" }).locator("xpath=following-sibling::dd").textContent();
      check(Number.isFinite(Number(kl)), `KL divergence shown as ${JSON.stringify(kl)}`);
      return `KL ${kl}`;
    });
  }

  let jobId;
  await step("jobs-submit", async () => {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Jobs" }).click();
    await heading("Submit a job").waitFor();
    const editor = page.locator("#job-body");
    if (process.env.E2E_JOB) await editor.fill(process.env.E2E_JOB);
    JSON.parse(await editor.inputValue());
    await main.getByRole("button", { name: "Submit", exact: true }).click();
    await page.waitForURL(/\/jobs\/[^/]+$/);
    jobId = decodeURIComponent(page.url().split("/").pop());
    await heading(/training job/, false).waitFor();
    return `job ${jobId}`;
  });

  await step("job-succeeded", async () => {
    const title = main.locator("h1 .state");
    await title.and(page.locator(".state-succeeded, .state-failed, .state-cancelled")).waitFor({ timeout: jobTimeout });
    const state = await title.textContent();
    const error = (await main.locator(".error pre").allTextContents()).join("\n");
    check(state === "succeeded", `job ${jobId} ${state}${error ? `: ${error}` : ""}`);
    const points = {};
    for (const metric of ["loss", "l0", "explained_variance"]) {
      points[metric] = Number(await page.getByTestId(`curve-${metric}`).getAttribute("data-points"));
    }
    check(Object.values(points).every((p) => p > 0), `curves without points after success: ${JSON.stringify(points)}`);
    check((await page.locator(".recharts-line path").count()) >= 3, "no curve drawn");
    return `curve points ${JSON.stringify(points)}`;
  });

  await step("jobs-list", async () => {
    await page.locator(".crumbs").getByRole("link", { name: "Jobs" }).click();
    const row = main.locator("tbody tr").filter({ has: page.getByRole("link", { name: jobId, exact: true }) });
    await row.locator(".state-succeeded").waitFor();
  });

  // Steering needs the gateway's POST /api/v1/steer: run when its OpenAPI document lists it (or
  // E2E_STEER=1, then it must), skip with a note otherwise (or E2E_STEER=0).
  let steering = process.env.E2E_STEER === "1";
  if (process.env.E2E_STEER === undefined || process.env.E2E_STEER === "") {
    steering = await fetch(`${base}/openapi.json`)
      .then((r) => (r.ok ? r.json() : {}))
      .then((doc) => Boolean(doc.paths?.["/api/v1/steer"]?.post))
      .catch(() => false);
    if (!steering) console.log("skip steering: the gateway documents no POST /api/v1/steer");
  }
  if (steering) {
    const prompt = "I think that"; // the panel's default prompt
    /** Wait until the steered generation in `scope` is over; both columns must hold the prompt and then text. */
    const steered = async (scope) => {
      const status = scope.getByRole("status", { name: "Steering status" });
      await status.filter({ hasText: /Done\.|Failed\.|Stopped\.|closed early/ }).waitFor({ timeout: steerTimeout });
      const state = (await status.textContent()).trim();
      const error = (await scope.locator(".error").allTextContents()).join(" ");
      check(state === "Done.", `steering ended with ${JSON.stringify(state)}${error ? `: ${error}` : ""}`);
      const texts = {};
      for (const run of ["Default", "Steered"]) {
        const column = scope.getByRole("region", { name: run, exact: true });
        const text = await column.locator(".steer-text").textContent();
        const tokens = await column.locator(".steer-token").count();
        check(text.startsWith(prompt), `the ${run} column does not start with the prompt: ${JSON.stringify(text)}`);
        check(tokens > 0 && text.length > prompt.length, `the ${run} column has no generated text (${tokens} tokens)`);
        check(/finished: (length|stop|eos)/.test(await column.textContent()), `the ${run} column shows no finish reason`);
        texts[run] = text.slice(prompt.length);
      }
      const differ = texts.Default !== texts.Steered ? "differ" : "are the same";
      return `default ${JSON.stringify(texts.Default)} / steered ${JSON.stringify(texts.Steered)} (${differ})`;
    };
    const featureUrl = `${base}/saes/${encodeURIComponent(saeId)}/features/${feature}`;

    await step("feature-steer", async () => {
      await page.goto(featureUrl);
      const panel = main.getByRole("region", { name: "Steer", exact: true });
      await panel.waitFor();
      check((await panel.getByLabel("Prompt").inputValue()) === prompt, "the steer panel's prompt is not the default");
      await panel.getByLabel("Max tokens").fill("12");
      await panel.getByRole("button", { name: "Steer", exact: true }).click();
      // both columns fill as the tokens stream in; Stop is on while they do
      return `feature #${feature}: ${await steered(panel)}`;
    });

    await step("steer-page", async () => {
      const panel = main.getByRole("region", { name: "Steer", exact: true });
      await panel.getByRole("link", { name: "Open in steer page" }).click();
      await page.waitForURL((u) => u.pathname === "/steer");
      const expected = `${saeId}:${feature}:add:4:r:both`;
      const restored = async () => {
        await heading("Steer generation").waitFor();
        const params = new URL(page.url()).searchParams;
        check(params.getAll("f").join(" ") === expected, `steer URL features ${params.getAll("f")}, expected ${expected}`);
        check(params.get("max") === "12", `steer URL max=${params.get("max")}, expected 12`);
        check((await page.getByLabel("SAE, row 1").inputValue()) === saeId, "row 1 is not the feature's SAE");
        check((await page.getByLabel("Feature, row 1").inputValue()) === feature, "row 1 is not the feature");
        check((await page.getByLabel("Max tokens").inputValue()) === "12", "max tokens not restored");
      };
      await restored();
      await page.reload(); // the URL alone restores the settings
      await restored();
      await main.getByRole("button", { name: "Steer", exact: true }).click();
      return await steered(main);
    });
  }

  if (transcoders) {
    await step("circuits-trace", async () => {
      await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Circuits" }).click();
      await heading("Trace a prompt").waitFor();
      await page.locator("#trace-prompt").fill("The capital of France is");
      await page.locator("#trace-transcoders").fill(transcoders);
      await main.getByRole("button", { name: "Trace", exact: true }).click();
      const link = main.locator(".trace-job a[href^='/circuits/graph-']");
      await link.waitFor({ timeout: jobTimeout });
      const href = await link.getAttribute("href");
      await link.click();
      await page.waitForURL((u) => u.pathname === href);
      return `graph ${href.split("/").pop()}`;
    });

    await step("circuit-graph", async () => {
      await page.getByTestId("graph-canvas").waitFor();
      await page.locator(".cn-feature").first().waitFor();
      const tokens = await page.locator(".cn-token").count();
      check(tokens === 25, `expected 25 token nodes (BOS + 24 bytes), got ${tokens}`);
      check((await page.locator(".cn-logit").count()) >= 1, "no logit node");
      const edges = await page.locator(".react-flow__edge").count();
      check(edges > 0, "no edges drawn");
      const slider = page.locator("#prune");
      const initial = await slider.inputValue();
      const count = () => page.locator(".cn-feature, .cn-error").count();
      const before = await count();
      await slider.fill("0.3");
      await page.waitForFunction((n) => document.querySelectorAll(".cn-feature, .cn-error").length < n, before);
      const after = await count();
      await slider.fill(initial);
      await page.waitForFunction((n) => document.querySelectorAll(".cn-feature, .cn-error").length === n, before);
      return `${before} feature/error nodes, ${after} at cumulative influence <= 0.3, ${edges} edges`;
    });

    await step("circuit-node", async () => {
      const node = page.locator(".cn-feature").first();
      await node.hover();
      const details = main.locator(".node-details");
      await details.getByRole("heading", { name: /^Feature \d+ at layer \d/ }).waitFor();
      await details.getByRole("heading", { name: /Top activations/ }).waitFor();
      const examples = await shaded(details.locator(".token"));
      check(examples.length > 0, "the hovered feature shows no shaded example tokens");
      await node.click();
      await page.waitForURL(/[?&]pinned=/);
      await main.getByRole("heading", { name: "Pinned (1)" }).waitFor();
      return `${examples.length} shaded example tokens; pinned`;
    });

    await step("circuit-intervene", async () => {
      const panel = main.locator(".intervention");
      await panel.locator("[aria-label^='Value for']").first().fill("0");
      await panel.getByRole("button", { name: "Run", exact: true }).click();
      const table = panel.getByRole("table", { name: "Top logits before and after" });
      await table.waitFor();
      const rows = await table.locator("tbody tr").count();
      check(rows > 0, "the intervention returned no logits");
      return `${rows} logits before/after`;
    });

    await step("circuit-attention", async () => {
      // a link between two positions goes through attention: clicking it opens the panel, prefilled
      const links = page.locator(".react-flow__edge.ce-attn");
      const count = await links.count();
      let via;
      const panel = main.getByTestId("attention-panel");
      const position = (id) => id.split("_").pop();
      if (count > 0) {
        // the topmost link: the last drawn of the inspected node's (highlighted, drawn above the
        // others), else of all. Playwright clicks the middle of its box, which is on the link (an
        // S-curve, symmetric about its middle), between two rows of nodes.
        const highlighted = page.locator(".react-flow__edge.ce-attn.ce-focus");
        const link = (await highlighted.count()) > 0 ? highlighted.last() : links.last();
        const [source, target] = (await link.getAttribute("data-id")).split("->");
        await link.click({ timeout: 10_000 });
        await panel.waitFor();
        const query = await panel.getByLabel(/Query position/).inputValue();
        const key = await panel.getByLabel(/Key position/).inputValue();
        check(
          query === position(target) && key === position(source),
          `link ${source} -> ${target} prefilled query ${query}, key ${key}`,
        );
        via = `link ${source} -> ${target} (one of ${count})`;
      } else {
        await main.getByRole("button", { name: "Explain attention…" }).click();
        await panel.waitFor();
        via = "the toggle (no link between two positions drawn)";
      }
      await panel.getByLabel("Head", { exact: true }).fill("0");
      await panel.getByRole("button", { name: "Explain attention", exact: true }).click();
      const score = Number(await panel.getByTestId("attention-score").textContent());
      check(Number.isFinite(score), "the attention score is not a number");
      const rows = {};
      for (const [name, testid] of [
        ["Query-side nodes", "attention-node"],
        ["Key-side nodes", "attention-node"],
        ["Top node pairs", "attention-pair"],
      ]) {
        rows[name] = await panel.getByRole("table", { name }).getByTestId(testid).count();
        check(rows[name] > 0, `the ${name} table has no rows`);
      }
      // a node of the results that is in the graph selects it there
      const node = panel.getByRole("table", { name: "Key-side nodes" }).locator("tbody button.link").first();
      let selected = "";
      if (await node.count()) {
        const id = (await node.getAttribute("title")).split(":")[0];
        await node.click();
        await page.locator(`[data-testid="node-${id}"].cn-selected`).waitFor();
        selected = `, selected ${id}`;
      }
      return `via ${via}: score ${score}, ${Object.values(rows).join("/")} query/key/pair rows${selected}`;
    });

    await step("circuit-export", async () => {
      const link = main.getByRole("link", { name: "Open in Neuronpedia / circuit-tracer (JSON)" });
      const [download] = await Promise.all([page.waitForEvent("download"), link.click()]);
      const body = JSON.parse(readFileSync(await download.path(), "utf8"));
      check(body.nodes?.length > 0 && Array.isArray(body.links), "the downloaded graph JSON has no nodes");
      return `${download.suggestedFilename()}: ${body.nodes.length} nodes, ${body.links.length} links`;
    });
  }
} catch (error) {
  failed = true;
  console.error(error instanceof Failure ? `FAIL ${error.message}` : error);
} finally {
  await browser.close();
}
if (problems.length) console.error(`errors seen by the browser:\n  ${problems.join("\n  ")}`);
if (failed || problems.length) process.exit(1);
console.log(`screenshots in ${shots}`);
