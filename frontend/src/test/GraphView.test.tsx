import { fireEvent, render, screen } from "@testing-library/react";
import { afterAll, beforeAll, describe, expect, it, onTestFinished, vi } from "vitest";
import type { GraphLink, GraphNode } from "../api/client";
import GraphView from "../circuits/GraphView";
import { layoutGraph } from "../circuits/layout";

// jsdom has no layout: give React Flow the APIs it measures with.
beforeAll(() => {
  vi.stubGlobal(
    "ResizeObserver",
    class {
      observe() {}
      unobserve() {}
      disconnect() {}
    },
  );
  vi.stubGlobal(
    "DOMMatrixReadOnly",
    class {
      m22 = 1;
      constructor() {}
    },
  );
});

afterAll(() => vi.unstubAllGlobals());

const tokens = ["<bos>", "Hi"];
const nodes: GraphNode[] = [
  { id: "E_0_0", kind: "token", layer: -1, position: 0, token: "<bos>", influence: 0, cumulative: 0 },
  { id: "E_1_1", kind: "token", layer: -1, position: 1, token: "Hi", influence: 0, cumulative: 0 },
  { id: "0_4_1", kind: "feature", layer: 0, position: 1, feature: 4, activation: 2, influence: 0.3, cumulative: 0.2 },
  { id: "2_9_1", kind: "logit", layer: 2, position: 1, token: "!", probability: 0.5, influence: 0, cumulative: 0 },
];
const links: GraphLink[] = [
  { source: "E_1_1", target: "0_4_1", weight: 1 },
  { source: "0_4_1", target: "2_9_1", weight: -2 },
];

describe("GraphView (React Flow)", () => {
  it("draws every node with its label and pins on click", async () => {
    const onTogglePin = vi.fn();
    const onHover = vi.fn();
    const layout = layoutGraph(nodes, tokens, 2);
    render(
      <div style={{ width: 800, height: 600 }}>
        <GraphView
          layout={layout}
          tokens={tokens}
          nodes={nodes}
          links={links}
          pinned={new Set(["E_0_0"])}
          inspected={null}
          focus={null}
          onHover={onHover}
          onInspect={() => {}}
          onTogglePin={onTogglePin}
          fitKey="all"
        />
      </div>,
    );
    expect(await screen.findByTestId("node-0_4_1")).toHaveClass("cn-feature");
    expect(screen.getByTestId("node-E_0_0")).toHaveClass("cn-pinned");
    expect(screen.getByTestId("node-2_9_1")).toHaveTextContent("! 50%");
    // row and column labels
    expect(screen.getByText("Logits")).toBeInTheDocument();
    expect(screen.getByText("L0")).toBeInTheDocument();
    expect(screen.getAllByText("Hi").length).toBeGreaterThan(0);
    // nodes are focusable and named for screen readers
    const feature = screen.getByTestId("rf__node-0_4_1");
    expect(feature).toHaveAttribute("aria-label", "Feature 4 at layer 0, “Hi” (position 1)");
    expect(feature).toHaveAttribute("tabindex", "0");
    expect(screen.getByTestId("rf__node-row-0")).not.toHaveAttribute("tabindex");
    // (fireEvent: d3-zoom's mousedown handler needs a window on the event, which user-event omits)
    fireEvent.click(screen.getByTestId("node-0_4_1"));
    expect(onTogglePin).toHaveBeenCalledWith("0_4_1");
    fireEvent.mouseEnter(screen.getByTestId("rf__node-2_9_1"));
    expect(onHover).toHaveBeenCalledWith("2_9_1");
  });

  it("takes clicks on links between two positions only (they go through attention), and nodes still pin", async () => {
    // measured nodes and handles, so that React Flow draws the links: an observer that reports at
    // once, and elements with a size
    vi.stubGlobal(
      "ResizeObserver",
      class {
        constructor(private report: (entries: { target: Element }[]) => void) {}
        observe(target: Element) {
          setTimeout(() => this.report([{ target }]));
        }
        unobserve() {}
        disconnect() {}
      },
    );
    for (const size of ["offsetWidth", "offsetHeight"] as const) {
      const original = Object.getOwnPropertyDescriptor(HTMLElement.prototype, size)!;
      Object.defineProperty(HTMLElement.prototype, size, { configurable: true, get: () => 20 });
      onTestFinished(() => void Object.defineProperty(HTMLElement.prototype, size, original));
    }
    const across: GraphLink = { source: "E_0_0", target: "0_4_1", weight: 0.5 };
    const onLinkClick = vi.fn();
    const onTogglePin = vi.fn();
    const props = {
      layout: layoutGraph(nodes, tokens, 2),
      tokens,
      nodes,
      links: [...links, across],
      pinned: new Set<string>(),
      inspected: null,
      focus: null,
      onHover: () => {},
      onInspect: () => {},
      onTogglePin,
      fitKey: "all",
    };
    const { rerender } = render(
      <div style={{ width: 800, height: 600 }}>
        <GraphView {...props} onLinkClick={onLinkClick} />
      </div>,
    );
    const attn = await screen.findByTestId("rf__edge-E_0_0->0_4_1");
    expect(attn).toHaveClass("ce-attn");
    expect(attn).toHaveAttribute(
      "aria-label",
      "Link from Token “<bos>” (position 0) to Feature 4 at layer 0, “Hi” (position 1): click to explain its attention",
    );
    const within = screen.getByTestId("rf__edge-E_1_1->0_4_1"); // both at position 1
    expect(within).not.toHaveClass("ce-attn");
    expect(screen.getByTestId("rf__edge-0_4_1->2_9_1")).not.toHaveClass("ce-attn");

    fireEvent.click(within);
    expect(onLinkClick).not.toHaveBeenCalled();
    fireEvent.click(attn);
    expect(onLinkClick).toHaveBeenCalledWith("E_0_0", "0_4_1");
    fireEvent.click(screen.getByTestId("node-0_4_1"));
    expect(onTogglePin).toHaveBeenCalledWith("0_4_1");
    expect(onLinkClick).toHaveBeenCalledTimes(1);

    // without a handler no link takes clicks
    rerender(
      <div style={{ width: 800, height: 600 }}>
        <GraphView {...props} />
      </div>,
    );
    expect(screen.getByTestId("rf__edge-E_0_0->0_4_1")).not.toHaveClass("ce-attn");
  });
});
