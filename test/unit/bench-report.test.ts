import { parse as parseCsv } from "csv-parse/sync";
import { XMLParser, XMLValidator } from "fast-xml-parser";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { after, describe, it } from "node:test";
import { cpuShares, machineFacts, readCpuTimes } from "../../src/bench/report/machine.js";
import { lineSpec, renderPlot } from "../../src/bench/report/plot.js";
import { createResultsDir, writeCsv, writeJson } from "../../src/bench/report/results.js";

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

const root = mkdtempSync(join(tmpdir(), "tara-bench-report-"));
after(() => rmSync(root, { recursive: true, force: true }));

describe("bench results directory", () => {
  it("is named after the start time and the command", () => {
    const { dir, startedAt } = createResultsDir("figure4", root);
    assert.equal(basename(dir), `${startedAt.replace(/[:.]/g, "-")}-figure4`);
    assert.ok(statSync(dir).isDirectory());
    assert.throws(() => createResultsDir("../escape", root), /not a safe directory name/);
  });

  it("writes JSON that reads back", () => {
    const { dir } = createResultsDir("json", root);
    const file = writeJson(dir, "points", { points: [{ clients: 1, rps: 2.5 }] });
    assert.equal(basename(file), "points.json");
    assert.deepEqual(JSON.parse(readFileSync(file, "utf8")), {
      points: [{ clients: 1, rps: 2.5 }],
    });
  });

  it("quotes CSV fields so that every value round-trips", () => {
    const { dir } = createResultsDir("csv", root);
    const rows = [
      { name: 'comma, "quote"', n: 1.5, ok: true, none: null },
      { name: "new\nline", n: -2, ok: false, extra: "only here" },
      { name: " padded ", n: 0 },
    ];
    const file = writeCsv(dir, "rows.csv", rows);
    assert.equal(basename(file), "rows.csv");
    const back = parseCsv(readFileSync(file, "utf8"), { columns: true }) as Record<
      string,
      string
    >[];
    assert.deepEqual(back, [
      { name: 'comma, "quote"', n: "1.5", ok: "true", none: "", extra: "" },
      { name: "new\nline", n: "-2", ok: "false", none: "", extra: "only here" },
      { name: " padded ", n: "0", ok: "", none: "", extra: "" },
    ]);
  });
});

describe("renderPlot", () => {
  it("writes an SVG with the title and axis titles and a PNG of real size", async () => {
    const { dir } = createResultsDir("plot", root);
    const rows = ["pdc", "lpc-cs"].flatMap((mechanism, m) =>
      [1, 16, 64].map((clients, i) => ({
        mechanism,
        clients,
        rps: 100 * (i + 1) * (m + 1),
        p50: 2 + i,
      })),
    );
    const files = await renderPlot(dir, "figure", {
      title: "Throughput & latency <test>",
      x: { field: "rps", title: "throughput (req/s)" },
      y: { field: "p50", title: "p50 latency (ms)", scale: "log" },
      series: "mechanism",
      label: "clients",
      rows,
      rules: [{ x: 250, label: "crash" }],
    });
    assert.deepEqual(files, { svg: join(dir, "figure.svg"), png: join(dir, "figure.png") });
    const svg = readFileSync(files.svg, "utf8");
    assert.equal(XMLValidator.validate(svg), true);
    const tree = new XMLParser({ ignoreAttributes: false }).parse(svg) as Record<string, unknown>;
    assert.ok(tree.svg, "root element is <svg>");
    for (const text of [
      "Throughput &amp; latency &lt;test&gt;",
      "throughput (req/s)",
      "p50 latency (ms)",
      "lpc-cs",
      "crash",
    ]) {
      assert.ok(svg.includes(text), `SVG contains ${text}`);
    }
    const png = readFileSync(files.png);
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    // IHDR: width and height (the plot is 640x400 plus axes and legend, at 2x).
    assert.ok(png.readUInt32BE(16) > 1000 && png.readUInt32BE(20) > 700);
    assert.ok(png.length > 20_000, `PNG of ${png.length} bytes`);
  });

  it("joins points in row order within a series", () => {
    const spec = lineSpec({
      title: "t",
      x: { field: "a", title: "a" },
      y: { field: "b", title: "b" },
      rows: [
        { a: 3, b: 1 },
        { a: 1, b: 2 },
      ],
    }) as unknown as { data: { values: { __order: number }[] } };
    assert.deepEqual(
      spec.data.values.map((r) => r.__order),
      [0, 1],
    );
  });
});

describe("machineFacts", () => {
  it("reports the machine", () => {
    const facts = machineFacts();
    assert.ok(facts.nproc >= 1);
    assert.equal(facts.node, process.version);
    assert.equal(facts.loadAverage.length, 3);
    assert.ok(facts.totalMemoryMiB > 0);
  });

  it("computes steal and busy shares between two readings", () => {
    assert.deepEqual(
      cpuShares({ total: 1000, idle: 500, steal: 10 }, { total: 2000, idle: 800, steal: 110 }),
      { steal: 0.1, busy: 0.7 },
    );
    assert.equal(cpuShares(null, readCpuTimes()), null);
  });
});
