// The attribution graph drawn with React Flow (@xyflow/react) at the positions of layoutGraph.
// Loaded lazily (React.lazy) so that the library only ships with the circuit page.
import {
  Background,
  Controls,
  Handle,
  Position,
  ReactFlow,
  useReactFlow,
  type Edge,
  type Node,
  type NodeChange,
  type NodeProps,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import { memo, useCallback, useEffect, useMemo, useRef } from "react";
import type { GraphLink, GraphNode } from "../api/client";
import { pct, showToken } from "../format";
import { describeNode } from "./describe";
import { MARGIN, type Layout } from "./layout";
import { linkStroke } from "./prune";

type CircuitData = { node: GraphNode; pinned: boolean };
type LabelData = { text: string; axis: "row" | "column" };
type CircuitFlowNode = Node<CircuitData, "circuit">;
type LabelFlowNode = Node<LabelData, "label">;
type FlowNode = CircuitFlowNode | LabelFlowNode;

export interface GraphViewProps {
  layout: Layout;
  tokens: string[];
  /** The nodes and links to draw (already pruned / filtered). */
  nodes: GraphNode[];
  links: GraphLink[];
  pinned: ReadonlySet<string>;
  /** The inspected node (selected: clicked, or Enter on a focused node). */
  inspected: string | null;
  /** The node whose links are highlighted (hovered, else inspected). */
  focus: string | null;
  onHover: (id: string | null) => void;
  onInspect: (id: string | null) => void;
  onTogglePin: (id: string) => void;
  /** A click on a link between two positions (one that attention carries); links within a position
   * take no clicks. Without it no link does. */
  onLinkClick?: (source: string, target: string) => void;
  /** Fit the view again when this changes (e.g. the pinned-only toggle)... */
  fitKey: string;
  /** ...to these nodes only (default: the whole graph with its labels). */
  fitTo?: string[];
}

const CircuitNodeView = memo(function CircuitNodeView({ data, selected }: NodeProps<CircuitFlowNode>) {
  const n = data.node;
  const cls = `cn cn-${n.kind}${data.pinned ? " cn-pinned" : ""}${selected ? " cn-selected" : ""}`;
  return (
    <div className={cls} data-testid={`node-${n.id}`}>
      <Handle type="target" position={Position.Bottom} isConnectable={false} />
      {n.kind === "token" && <span className="cn-text">{showToken(n.token ?? "")}</span>}
      {n.kind === "logit" && (
        <span className="cn-text">
          {showToken(n.token ?? "")} <small>{pct(n.probability ?? undefined, 0)}</small>
        </span>
      )}
      <Handle type="source" position={Position.Top} isConnectable={false} />
    </div>
  );
});

function LabelView({ data }: NodeProps<LabelFlowNode>) {
  return (
    <div className={`cn-label cn-label-${data.axis}`} title={data.text}>
      {data.text}
    </div>
  );
}

const nodeTypes = { circuit: CircuitNodeView, label: LabelView };
const NODE_ORIGIN: [number, number] = [0.5, 0.5];

/** Fits the view again when `fitKey` changes (not on the first render: the fitView prop does that). */
function Refit({ fitKey, only }: { fitKey: string; only?: string[] }) {
  const { fitView } = useReactFlow();
  const first = useRef(true);
  const ids = useRef(only);
  ids.current = only;
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    const nodes = ids.current?.map((id) => ({ id }));
    const frame = requestAnimationFrame(() => void fitView({ padding: 0.1, maxZoom: 1.5, nodes }));
    return () => cancelAnimationFrame(frame);
  }, [fitKey, fitView]);
  return null;
}

export default function GraphView(props: GraphViewProps) {
  const { layout, tokens, nodes, links, pinned, inspected, focus, onHover, onInspect, onTogglePin, onLinkClick, fitKey, fitTo } =
    props;

  const labels = useMemo<LabelFlowNode[]>(
    () => [
      ...layout.columns.map((c) => ({
        id: `col-${c.position}`,
        type: "label" as const,
        position: { x: c.x, y: MARGIN.top / 2 },
        data: { text: c.label, axis: "column" as const },
        selectable: false,
        focusable: false,
        draggable: false,
        width: c.width - 8,
      })),
      ...layout.rows.map((r) => ({
        id: `row-${r.layer}`,
        type: "label" as const,
        position: { x: MARGIN.left / 2, y: r.y },
        data: { text: r.label, axis: "row" as const },
        selectable: false,
        focusable: false,
        draggable: false,
      })),
    ],
    [layout],
  );

  // One object per node while its flags do not change, so React Flow re-renders only what changed.
  const base = useMemo(
    () =>
      nodes.map<CircuitFlowNode>((n) => ({
        id: n.id,
        type: "circuit",
        position: layout.positions.get(n.id) ?? { x: 0, y: 0 },
        data: { node: n, pinned: false },
        draggable: false,
        zIndex: 2, // above every link, highlighted (zIndex 1) ones too: a link never takes a node's click
        ariaLabel: describeNode(n, tokens),
      })),
    [nodes, layout, tokens],
  );
  const flowNodes = useMemo<FlowNode[]>(
    () => [
      ...labels,
      ...base.map((n) => {
        const isPinned = pinned.has(n.id);
        const isSelected = n.id === inspected;
        return isPinned || isSelected
          ? { ...n, selected: isSelected, data: { ...n.data, pinned: isPinned }, className: isPinned ? "pinned" : undefined }
          : n;
      }),
    ],
    [labels, base, pinned, inspected],
  );

  const clickable = Boolean(onLinkClick);
  const baseEdges = useMemo<Edge[]>(() => {
    const maxAbs = Math.max(0, ...links.map((l) => Math.abs(l.weight)));
    const byId = new Map(nodes.map((n) => [n.id, n]));
    return [...links]
      .sort((a, b) => Math.abs(a.weight) - Math.abs(b.weight)) // strongest drawn last, on top
      .map((l) => {
        // a link between positions goes through attention: a click explains it (see onLinkClick)
        const [source, target] = [byId.get(l.source), byId.get(l.target)];
        const across = clickable && source !== undefined && target !== undefined && source.position !== target.position;
        return {
          id: `${l.source}->${l.target}`,
          source: l.source,
          target: l.target,
          selectable: false,
          focusable: false,
          interactionWidth: across ? 8 : 0,
          className: `${l.weight >= 0 ? "ce-pos" : "ce-neg"}${across ? " ce-attn" : ""}`,
          style: linkStroke(l.weight, maxAbs),
          ariaLabel: across
            ? `Link from ${describeNode(source, tokens)} to ${describeNode(target, tokens)}: click to explain its attention`
            : undefined,
        };
      });
  }, [links, nodes, tokens, clickable]);
  const edges = useMemo<Edge[]>(
    () =>
      focus
        ? baseEdges.map((e) =>
            e.source === focus || e.target === focus ? { ...e, className: `${e.className} ce-focus`, zIndex: 1 } : e,
          )
        : baseEdges,
    [baseEdges, focus],
  );

  const onNodesChange = useCallback(
    (changes: NodeChange<FlowNode>[]) => {
      // Clicks and Enter on a focused node select it: that is the inspected node.
      for (const change of changes) {
        if (change.type === "select" && change.selected && !change.id.startsWith("col-") && !change.id.startsWith("row-"))
          onInspect(change.id);
      }
    },
    [onInspect],
  );

  return (
    <div className={`circuit-canvas${focus ? " has-focus" : ""}`} data-testid="graph-canvas">
      <ReactFlow<FlowNode, Edge>
        nodes={flowNodes}
        edges={edges}
        nodeTypes={nodeTypes}
        nodeOrigin={NODE_ORIGIN}
        onNodesChange={onNodesChange}
        onNodeClick={(_, node) => node.type === "circuit" && onTogglePin(node.id)}
        onNodeMouseEnter={(_, node) => node.type === "circuit" && onHover(node.id)}
        onNodeMouseLeave={() => onHover(null)}
        onEdgeClick={
          onLinkClick ? (_, edge) => edge.className?.includes("ce-attn") && onLinkClick(edge.source, edge.target) : undefined
        }
        onPaneClick={() => onInspect(null)}
        nodesDraggable={false}
        nodesConnectable={false}
        edgesFocusable={false}
        elementsSelectable
        selectNodesOnDrag={false}
        multiSelectionKeyCode={null}
        deleteKeyCode={null}
        fitView
        fitViewOptions={{ padding: 0.04 }}
        minZoom={0.1}
        maxZoom={4}
        ariaLabelConfig={{ "node.a11yDescription.default": "Press Enter to show this node's details." }}
      >
        <Background gap={24} size={1} />
        <Controls showInteractive={false} />
        <Refit fitKey={fitKey} only={fitTo} />
      </ReactFlow>
    </div>
  );
}
