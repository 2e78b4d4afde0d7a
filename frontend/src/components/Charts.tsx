import { Bar, BarChart, CartesianGrid, Line, LineChart, Tooltip, XAxis, YAxis } from "recharts";
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
