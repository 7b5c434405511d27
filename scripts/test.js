// Runs every compiled test file (dist/test/**/*.test.js) with node's test runner, one file at
// a time: process tests start whole clusters and the machine has two cores.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join } from "node:path";

function find(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return find(path);
    return entry.name.endsWith(".test.js") ? [path] : [];
  });
}

const filter = process.argv[2];
const files = find("dist/test")
  .filter((file) => !filter || file.includes(filter))
  .sort();
if (files.length === 0) {
  console.error("no test files found");
  process.exit(1);
}
const result = spawnSync(process.execPath, ["--test", "--test-concurrency=1", ...files], {
  stdio: "inherit",
});
process.exit(result.status ?? 1);
