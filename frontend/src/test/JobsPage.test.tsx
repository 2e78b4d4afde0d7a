import { describe, expect, it } from "vitest";
import { parseBody, TEMPLATES } from "../pages/JobsPage";

describe("job templates", () => {
  it("the training template is a run that works as is: the tiny model, a hook it has, seconds of work", () => {
    const { body, error } = parseBody(TEMPLATES.training);
    expect(error).toBeUndefined();
    const config = body!.config as {
      model: { name: string };
      data: { max_tokens: number };
      activations: { hooks: string[] };
      sae: { d_sae: number };
    };
    // "tiny" is the random model built in; any other name is looked up on the Hugging Face Hub
    expect(config.model.name).toBe("tiny");
    // the tiny model has 2 layers: the default hook (blocks.6) does not exist there
    for (const hook of config.activations.hooks) expect(hook).toMatch(/^blocks\.[01]\./);
    expect(config.data.max_tokens).toBeLessThanOrEqual(10_000);
    expect(config.sae.d_sae).toBeGreaterThan(0);
  });

  it("the analysis template parses", () => {
    expect(parseBody(TEMPLATES.analysis).body).toHaveProperty("sae_uri");
  });

  it("names what is wrong with the editor's text", () => {
    expect(parseBody("{").error).toMatch(/^Not valid JSON/);
    expect(parseBody("[1]").error).toBe("The request must be a JSON object.");
  });
});
