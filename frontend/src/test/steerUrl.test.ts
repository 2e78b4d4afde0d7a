import { describe, expect, it } from "vitest";
import {
  DEFAULT_SETTINGS,
  formatFeature,
  parseFeature,
  parseSteerQuery,
  steerQuery,
  steerRequest,
  type SteerFeature,
  type SteerSettings,
} from "../api/steer";

const add: SteerFeature = { sae_id: "tiny-l1", feature: 12, mode: "add", strength: 4, relative: true, positions: "both", from_token: 1 };

describe("steer URL", () => {
  it("writes the documented, readable format", () => {
    const settings: SteerSettings = { ...DEFAULT_SETTINGS, prompt: "I think that", features: [add], max_new_tokens: 32, temperature: 0 };
    expect(steerQuery(settings)).toBe("prompt=I+think+that&f=tiny-l1:12:add:4:r:both&max=32&t=0");
  });

  it("round-trips every setting, odd SAE ids and prompts included", () => {
    const settings: SteerSettings = {
      prompt: "a+b & c=d? it's 100% “quotes” #hash ↵\nnew line",
      features: [
        add,
        { sae_id: "org/model:layer:3", feature: 0, mode: "clamp", strength: -2.5, relative: false, positions: "prompt", from_token: 4 },
        { sae_id: "x", feature: 7, mode: "scale", strength: 0.25, relative: false, positions: "generated", from_token: 1 },
        { sae_id: "x", feature: 8, mode: "ablate", strength: 0, relative: false, positions: "both", from_token: 2 },
        { sae_id: "y", feature: 9, mode: "add", strength: 1e-7, relative: false, positions: "both", from_token: 1 },
      ],
      max_new_tokens: 100,
      temperature: 0.7,
      top_p: 0.9,
      seed: 42,
      frozen_attention: true,
    };
    const query = steerQuery(settings);
    expect(parseSteerQuery(query)).toEqual(settings);
    expect(parseSteerQuery(`?${query}`)).toEqual(settings);
    expect(parseSteerQuery(new URLSearchParams(query))).toEqual(settings);
    // defaults are left out
    expect(steerQuery({ ...settings, top_p: 1, seed: 0, frozen_attention: false })).not.toMatch(/[&?](p|seed|frozen)=/);
  });

  it("reads an SAE id with colons from the right", () => {
    expect(formatFeature({ ...add, sae_id: "a:b", from_token: 3 })).toBe("a:b:12:add:4:r:both:3");
    expect(parseFeature("a:b:12:add:4:r:both:3")).toEqual({ ...add, sae_id: "a:b", from_token: 3 });
    expect(parseFeature("a:7:12:add:4:r:both")).toEqual({ ...add, sae_id: "a:7" });
  });

  it("keeps features consistent: ablate has strength 0, scale and ablate are absolute", () => {
    expect(parseFeature("s:1:ablate:5:r:both")).toMatchObject({ mode: "ablate", strength: 0, relative: false });
    expect(parseFeature("s:1:scale:2:r:both")).toMatchObject({ mode: "scale", strength: 2, relative: false });
    expect(formatFeature({ ...add, mode: "ablate", strength: 3 })).toBe("tiny-l1:12:ablate:0:a:both");
    const body = steerRequest({ ...DEFAULT_SETTINGS, features: [{ ...add, mode: "scale" }] });
    expect(body.features[0]).toMatchObject({ mode: "scale", relative: false });
    expect(body.compare).toBe(true);
  });

  it("drops malformed features and falls back to defaults for bad values", () => {
    const bad = [
      "",
      "nope",
      ":1:add:4:r:both", // no SAE id
      "s:-1:add:4:r:both", // negative index
      "s:1.5:add:4:r:both", // not an integer
      "s:1:boost:4:r:both", // unknown mode
      "s:1:add:abc:r:both", // strength not a number
      "s:1:add::r:both", // empty strength
      "s:1:add:Infinity:r:both",
      "s:1:add:0x10:r:both",
      "s:1:add:20000:r:both", // |strength| > 1e4
      "s:1:add:4:x:both", // neither r nor a
      "s:1:add:4:r:everywhere", // unknown positions
      "s:1:add:4:r:both:0", // from_token < 1
      "s:1:add:4:r", // too short
    ];
    const query = [...bad.map((f) => `f=${encodeURIComponent(f)}`), "f=ok:3:clamp:1:a:both", "max=999", "t=-1", "p=0", "seed=-3", "frozen=yes"].join("&");
    expect(parseSteerQuery(query)).toEqual({
      ...DEFAULT_SETTINGS,
      features: [{ sae_id: "ok", feature: 3, mode: "clamp", strength: 1, relative: false, positions: "both", from_token: 1 }],
    });
    expect(parseSteerQuery("max=12.5&t=NaN&%E0%A4%A=1")).toEqual(DEFAULT_SETTINGS);
    expect(parseSteerQuery("")).toEqual(DEFAULT_SETTINGS);
    // a prompt left empty stays empty (the page shows what was there); a missing one is the default
    expect(parseSteerQuery("prompt=&max=8").prompt).toBe("");
    expect(parseSteerQuery("max=8").prompt).toBe("I think that");
    expect(parseFeature("s:12345678901234567890:add:1:r:both")).toBeUndefined();
    expect(parseFeature("s:1:add:1:r:both:100001")).toBeUndefined();
  });

  it("keeps at most 16 features and 4000 prompt characters", () => {
    const many = Array.from({ length: 20 }, (_, i) => `f=s:${i}:add:1:r:both`).join("&");
    const settings = parseSteerQuery(`${many}&prompt=${"x".repeat(5000)}`);
    expect(settings.features).toHaveLength(16);
    expect(settings.features[15].feature).toBe(15);
    expect(settings.prompt).toHaveLength(4000);
  });
});
