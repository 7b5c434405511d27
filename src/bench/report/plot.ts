// Line plots of bench results: a Vega-Lite spec compiled by vega-lite, rendered to SVG by vega
// (headless, no canvas needed) and rasterised to PNG by resvg.
import { Resvg } from "@resvg/resvg-js";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse, View } from "vega";
import { compile, type TopLevelSpec } from "vega-lite";

export interface LinePlot {
  title: string;
  x: { field: string; title: string; scale?: "linear" | "log" };
  y: { field: string; title: string; scale?: "linear" | "log" };
  /** Field used for colour and legend: one line per distinct value. */
  series?: string;
  /** Points are joined in the order of `rows` (within each series), not sorted by x. */
  rows: Record<string, unknown>[];
  /** Default "line+points". */
  marks?: "line" | "line+points";
  /** Vertical annotation lines, e.g. a crash time. */
  rules?: { x: number; label: string }[];
  /** Field whose value is written next to each point (e.g. the client count). */
  label?: string;
}

// DejaVu is on Debian images (fonts-dejavu-core); the rest are fallbacks elsewhere. resvg draws
// no text at all without a font it can find, so it is named explicitly.
const FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif";
const ORDER_FIELD = "__order";

/** The Vega-Lite spec of a LinePlot (exported for tests and for anyone who wants the JSON). */
export function lineSpec(plot: LinePlot): TopLevelSpec {
  const rows = plot.rows.map((row, i) => ({ ...row, [ORDER_FIELD]: i }));
  const axisType = (scale?: "linear" | "log") => (scale === "log" ? "log" : "linear");
  const encoding = {
    x: {
      field: plot.x.field,
      type: "quantitative" as const,
      title: plot.x.title,
      scale: { type: axisType(plot.x.scale), zero: false, nice: true },
    },
    y: {
      field: plot.y.field,
      type: "quantitative" as const,
      title: plot.y.title,
      // A log scale cannot include zero (vega-lite warns if asked).
      scale:
        plot.y.scale === "log" ? { type: "log" as const } : { type: "linear" as const, zero: true },
    },
    order: { field: ORDER_FIELD, type: "quantitative" as const },
    ...(plot.series
      ? {
          color: {
            field: plot.series,
            type: "nominal" as const,
            title: plot.series,
            // Legend in the order the series first appear in rows, not alphabetical.
            scale: { domain: [...new Set(plot.rows.map((r) => r[plot.series!]))] as string[] },
          },
        }
      : {}),
  };
  const layers: object[] = [
    {
      mark: { type: "line", point: (plot.marks ?? "line+points") === "line+points" },
      encoding,
    },
  ];
  if (plot.label) {
    layers.push({
      mark: { type: "text", align: "left", dx: 5, dy: -6, fontSize: 9 },
      encoding: {
        x: encoding.x,
        y: encoding.y,
        text: { field: plot.label, type: "nominal" },
        ...(encoding.color ? { color: encoding.color } : {}),
      },
    });
  }
  for (const rule of plot.rules ?? []) {
    const data = { values: [{ x: rule.x, label: rule.label }] };
    layers.push(
      {
        data,
        mark: { type: "rule", strokeDash: [4, 3], color: "#888" },
        encoding: { x: { field: "x", type: "quantitative" } },
      },
      {
        data,
        mark: { type: "text", align: "left", baseline: "top", dx: 3, y: 2, color: "#555" },
        encoding: { x: { field: "x", type: "quantitative" }, text: { field: "label" } },
      },
    );
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v6.json",
    title: plot.title,
    width: 640,
    height: 400,
    background: "white",
    // Legend labels are curve names such as "LPC-CS adaptive (bf 1)": do not truncate them.
    config: { font: FONT, legend: { labelLimit: 400 } },
    data: { values: rows },
    layer: layers,
  } as TopLevelSpec;
}

/** Renders `plot` to `<dir>/<name>.svg` and `<dir>/<name>.png`; returns both paths. */
export async function renderPlot(
  dir: string,
  name: string,
  spec: LinePlot,
): Promise<{ svg: string; png: string }> {
  const vega = compile(lineSpec(spec)).spec;
  const view = new View(parse(vega), { renderer: "none" });
  let svgText: string;
  try {
    svgText = await view.toSVG();
  } finally {
    view.finalize();
  }
  const png = new Resvg(svgText, {
    background: "white",
    fitTo: { mode: "zoom", value: 2 },
    font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" },
  })
    .render()
    .asPng();
  const svg = join(dir, `${name}.svg`);
  const pngFile = join(dir, `${name}.png`);
  writeFileSync(svg, svgText);
  writeFileSync(pngFile, png);
  return { svg, png: pngFile };
}
