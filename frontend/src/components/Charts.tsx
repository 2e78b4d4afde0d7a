import {
  Bar,
  BarChart,
  CartesianGrid,
  LabelList,
  Line,
  LineChart,
  Scatter,
  ScatterChart,
  Tooltip,
  XAxis,
  YAxis,
} from "recharts";
import { fmt } from "../format";

export interface Bin {
  label: string;
  count: number;
}

/** A bar chart of binned counts (fixed size: fits a 1280px layout and renders in tests). */
export function HistogramChart({
  bins,
  title,
  xLabel,
  width = 560,
  height = 220,
  logScale = false,
}: {
  bins: Bin[];
  title: string;
  xLabel: string;
  width?: number;
  height?: number;
  logScale?: boolean;
}) {
  const data = bins.map((b) => ({ ...b, shown: logScale ? Math.log10(1 + b.count) : b.count }));
  return (
    <figure className="chart" aria-label={title}>
      <figcaption>{title}</figcaption>
      <BarChart width={width} height={height} data={data} margin={{ top: 8, right: 8, bottom: 24, left: 8 }}>
        <CartesianGrid strokeDasharray="3 3" vertical={false} />
        <XAxis dataKey="label" interval="preserveStartEnd" fontSize={11} label={{ value: xLabel, position: "bottom", offset: 8, fontSize: 11 }} />
        <YAxis fontSize={11} allowDecimals={logScale} tickFormatter={(v: number) => (logScale ? fmt(10 ** v - 1, 0) : fmt(v, 0))} />
        <Tooltip
          formatter={(_v, _n, item) => [String((item?.payload as Bin | undefined)?.count ?? ""), "count"]}
        />
        <Bar dataKey="shown" fill="#e8700a" isAnimationActive={false} />
      </BarChart>
    </figure>
  );
}

export interface CurvePoint {
  step: number;
  [metric: string]: number;
}

/** One metric over training steps. */
export function CurveChart({
  points,
  metric,
  title,
  color,
  width = 400,
  height = 220,
}: {
  points: CurvePoint[];
  metric: string;
  title: string;
  color: string;
  width?: number;
  height?: number;
}) {
  const last = points.length ? points[points.length - 1][metric] : undefined;
  return (
    <figure className="chart" aria-label={title} data-testid={`curve-${metric}`} data-points={points.length}>
      <figcaption>
        {title}: <output>{fmt(last, 4)}</output>
      </figcaption>
      <LineChart width={width} height={height} data={points} margin={{ top: 8, right: 12, bottom: 8, left: 4 }}>
        <CartesianGrid strokeDasharray="3 3" />
        <XAxis dataKey="step" type="number" domain={["dataMin", "dataMax"]} fontSize={11} />
        <YAxis fontSize={11} domain={["auto", "auto"]} tickFormatter={(v: number) => fmt(v, 3)} />
        <Tooltip formatter={(v) => fmt(Number(v), 4)} labelFormatter={(s) => `step ${s}`} />
        <Line type="monotone" dataKey={metric} stroke={color} dot={false} isAnimationActive={false} />
      </LineChart>
    </figure>
  );
}

export interface ScatterPoint {
  label: string;
  x: number;
  y: number;
}

/** Labeled points, e.g. one per SAE (fixed size, like the other charts). */
export function ScatterPlot({
  points,
  title,
  xLabel,
  yLabel,
  width = 560,
  height = 320,
}: {
  points: ScatterPoint[];
  title: string;
  xLabel: string;
  yLabel: string;
  width?: number;
  height?: number;
}) {
  return (
    <figure className="chart" aria-label={title} data-testid="scatter" data-points={points.length} data-y={yLabel}>
      <figcaption>{title}</figcaption>
      <ScatterChart width={width} height={height} margin={{ top: 12, right: 24, bottom: 28, left: 12 }}>
        <CartesianGrid strokeDasharray="3 3" />
        <XAxis
          dataKey="x"
          type="number"
          name={xLabel}
          domain={["auto", "auto"]}
          fontSize={11}
          tickFormatter={(v: number) => fmt(v, 2)}
          label={{ value: xLabel, position: "bottom", offset: 10, fontSize: 11 }}
        />
        <YAxis
          dataKey="y"
          type="number"
          name={yLabel}
          domain={["auto", "auto"]}
          fontSize={11}
          tickFormatter={(v: number) => fmt(v, 3)}
          label={{ value: yLabel, angle: -90, position: "insideLeft", fontSize: 11 }}
        />
        <Tooltip
          formatter={(v, name) => [fmt(Number(v), 4), String(name)]}
          labelFormatter={(_l, items) => String((items?.[0]?.payload as ScatterPoint | undefined)?.label ?? "")}
        />
        <Scatter data={points} fill="#e8700a" isAnimationActive={false}>
          <LabelList dataKey="label" position="top" fontSize={10} />
        </Scatter>
      </ScatterChart>
    </figure>
  );
}
