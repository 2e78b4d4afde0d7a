import { render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it } from "vitest";
import { intensity, TokenShading } from "../components/TokenShading";

describe("TokenShading", () => {
  it("shades each token with intensity proportional to its activation", () => {
    render(<TokenShading tokens={["The", " cat", " sat", "\n"]} values={[0, 1, 4, 2]} />);
    const tokens = screen.getAllByTestId("token");
    expect(tokens.map((t) => t.textContent)).toEqual(["The", " cat", " sat", "↵"]);
    expect(tokens.map((t) => Number(t.dataset.intensity))).toEqual([0, 0.25, 1, 0.5]);
    expect(tokens[1].style.backgroundColor).toBe("rgba(255, 115, 0, 0.25)");
    expect(tokens[2].style.backgroundColor).toBe("rgb(255, 115, 0)");
    expect(tokens[0].style.backgroundColor).toBe("rgba(255, 115, 0, 0)");
  });

  it("scales against a given max and clamps above it", () => {
    render(<TokenShading tokens={["a", "b", "c"]} values={[5, 10, 20]} max={10} />);
    expect(screen.getAllByTestId("token").map((t) => Number(t.dataset.intensity))).toEqual([0.5, 1, 1]);
    expect(intensity(-1, 10)).toBe(0);
    expect(intensity(3, 0)).toBe(0);
  });

  it("shows the token and its value on hover (title)", async () => {
    render(<TokenShading tokens={["Hello", " world"]} values={[0.5, 2.25]} />);
    const world = screen.getByText(" world", { normalizer: (s) => s });
    expect(world).toHaveAttribute("title", '" world": 2.25');
    await userEvent.hover(world);
    expect(screen.getByTitle('"Hello": 0.5')).toBeInTheDocument();
  });
});
