// Render Allure results with Allure 3 (the npm package, no Java) and judge the quality gates
// pytest-mooncake wrote beside them (mooncake-perf.json: one metric sample per threshold end,
// each with its metricMin/metricMax rule), so the rendered report shows which gate failed.
//
//   node scripts/allure-render.mjs TOOLS_DIR RESULTS_DIR REPORT_DIR
//
// TOOLS_DIR is where npm installed the allure package (scripts/allure-check.sh does that).
// `allure generate` renders without judging gates and `allure quality-gate` judges without
// rendering; this does both in one pass with the same library. It prints one line per gate
// and writes REPORT_DIR/quality-gates.json. Exit status: 0, or 3 when a gate failed.
import { readFile, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const [tools, results, output] = process.argv.slice(2).map((path) => resolve(path));
if (!output) {
  console.error("usage: node scripts/allure-render.mjs TOOLS_DIR RESULTS_DIR REPORT_DIR");
  process.exit(2);
}
// Allure 3's quality gate calls Iterator.prototype.toArray (Node >= 22); Debian 12's node 20 lacks it.
const iteratorPrototype = Object.getPrototypeOf(Object.getPrototypeOf([].values()));
if (!iteratorPrototype.toArray) {
  Object.defineProperty(iteratorPrototype, "toArray", { value() { return Array.from(this); }, configurable: true, writable: true });
}
const core = await import(pathToFileURL(join(tools, "node_modules", "@allurereport", "core", "dist", "index.js")).href);

let samples = [];
try {
  samples = JSON.parse(await readFile(join(results, "mooncake-perf.json"), "utf8"));
} catch (error) {
  if (error.code !== "ENOENT") throw error; // no thresholds judged in this run: no gates
}
const rules = samples.filter((sample) => sample.gate).map((sample) => ({
  id: sample.key,
  [sample.gate.rule]: { key: sample.key, value: sample.gate.value },
}));

const config = await core.readConfig(process.cwd(), undefined, { output });
if (rules.length) config.qualityGate = { rules };
const report = new core.AllureReport(config);
await report.start();
await report.readDirectory(results);
let gates = [];
if (rules.length) {
  const trs = await report.store.allTestResults({ includeRetries: false });
  gates = (await report.validate({ trs })).results;
  report.realtimeDispatcher.sendQualityGateResults(gates);
}
await report.done();

const summary = gates.map((gate) => ({ rule: gate.rule, success: gate.success, expected: gate.expected, actual: gate.actual }));
await writeFile(join(output, "quality-gates.json"), JSON.stringify(summary, null, 2));
for (const gate of summary) {
  const value = Number.isFinite(gate.actual?.value) ? gate.actual.value.toFixed(3) : "n/a";
  console.log(`quality gate ${gate.success ? "passed" : "FAILED"}: ${gate.rule}: ${value} (${Object.keys(rules.find((r) => r.id === gate.rule.split("/")[0]) ?? {}).filter((k) => k !== "id")[0] ?? "?"} ${gate.expected?.value})`);
}
process.exit(core.filterFailedQualityGateResults(gates).length ? 3 : 0);
