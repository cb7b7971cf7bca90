/**
 * Run every benchmark in bench/ one after another (they measure throughput
 * against a baseline copy in the same run, so they must not overlap).
 *
 *   deno task bench [NAME ...]     # e.g. deno task bench migration scan
 */

const ALL = [
  "migration",
  "inspect",
  "streams",
  "plugmap",
  "filter_verify",
  "strip",
  "kdump",
  "scan",
  "zstd",
  "proxy",
  "mapped_ram",
  "startup",
];
const wanted = Deno.args.length > 0 ? Deno.args : ALL;
let failed = 0;
for (const name of wanted) {
  const script = new URL(`./${name}.ts`, import.meta.url).pathname;
  console.log(`\n=== bench/${name}.ts`);
  const { success } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!success) {
    failed++;
    console.log(`bench/${name}.ts failed`);
  }
}
Deno.exit(failed === 0 ? 0 : 1);
