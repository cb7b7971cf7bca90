import assert from "node:assert/strict";
import {
  checkOutput,
  createAtomicDirectory,
  createAtomicOutput,
  fileIdentity,
} from "../../src/io/file.ts";
import { OutputError } from "../../src/errors.ts";

function listDir(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
}

async function rejectsWith(p: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof OutputError, String(e));
    assert.equal(e.code, code);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("createAtomicOutput() does not replace a file that appeared while the output was written", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-atomic-" });
  try {
    const out = await createAtomicOutput(`${dir}/out.bin`);
    await out.write(new Uint8Array([1, 2, 3]));
    Deno.writeTextFileSync(`${dir}/out.bin`, "someone else's");
    await rejectsWith(out.commit(), "output-exists", /appeared while it was written/);
    assert.equal(Deno.readTextFileSync(`${dir}/out.bin`), "someone else's");
    assert.deepEqual(listDir(dir), ["out.bin"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createAtomicOutput() with force replaces a symlink itself, never the file it points to", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-atomic-" });
  try {
    Deno.writeTextFileSync(`${dir}/target`, "keep me");
    Deno.symlinkSync(`${dir}/target`, `${dir}/link`);
    await checkOutput(`${dir}/link`, { force: true });
    const out = await createAtomicOutput(`${dir}/link`, { force: true });
    await out.write(new TextEncoder().encode("new"));
    await out.commit();
    assert.equal(Deno.readTextFileSync(`${dir}/target`), "keep me");
    assert.equal(Deno.lstatSync(`${dir}/link`).isSymlink, false);
    assert.equal(Deno.readTextFileSync(`${dir}/link`), "new");
    assert.equal(out.offset, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createAtomicOutput() refuses an output that is an input given by identity, and checkOutput() refuses early", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-atomic-" });
  try {
    Deno.writeTextFileSync(`${dir}/in`, "evidence");
    Deno.linkSync(`${dir}/in`, `${dir}/alias`);
    const id = (await fileIdentity(`${dir}/in`))!;
    await rejectsWith(
      createAtomicOutput(`${dir}/alias`, { inputs: [id], force: true }),
      "output-is-input",
      /it is the input/,
    );
    await rejectsWith(
      checkOutput(`${dir}/alias`, { protect: [`${dir}/in`], force: true }),
      "output-is-input",
      /it is the input/,
    );
    await rejectsWith(checkOutput(`${dir}/in`), "output-exists", /without --force/);
    await rejectsWith(checkOutput(dir), "not-writable", /is a directory/);
    assert.deepEqual(listDir(dir), ["alias", "in"]);
    assert.equal(Deno.readTextFileSync(`${dir}/in`), "evidence");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("createAtomicDirectory() builds aside, refuses existing folders without force or marker, never one holding an input", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmem-atomic-" });
  try {
    const input = `${dir}/in.bin`;
    Deno.writeFileSync(input, new Uint8Array(8));
    Deno.chmodSync(input, 0o640);
    const out = `${dir}/x`;
    const d = await createAtomicDirectory(out, { inputs: [input] });
    await d.writeFile("a.bin", new Uint8Array([1]));
    await rejectsWith(d.writeFile("a.bin", new Uint8Array([1])), "io", /exists|creating/i);
    await assert.rejects(d.writeFile("../b", new Uint8Array([1])), RangeError);
    assert.equal(listDir(dir).length, 2); // in.bin and the temporary folder; x not yet
    await d.commit();
    assert.deepEqual(listDir(out), ["a.bin"]);
    assert.equal((Deno.statSync(`${out}/a.bin`).mode! & 0o777).toString(8), "640");
    assert.equal((Deno.statSync(out).mode! & 0o777).toString(8), "750");

    await rejectsWith(createAtomicDirectory(out), "output-exists", /without --force/);
    await rejectsWith(
      createAtomicDirectory(out, { force: true, replaceableIfContains: "manifest.json" }),
      "output-exists",
      /does not hold manifest\.json/,
    );
    Deno.writeTextFileSync(`${out}/manifest.json`, "{}");
    Deno.renameSync(input, `${out}/in.bin`);
    await rejectsWith(
      createAtomicDirectory(out, {
        inputs: [`${out}/in.bin`],
        force: true,
        replaceableIfContains: "manifest.json",
      }),
      "output-is-input",
      /is inside it/,
    );
    Deno.renameSync(`${out}/in.bin`, input);
    const again = await createAtomicDirectory(out, {
      inputs: [input],
      force: true,
      replaceableIfContains: "manifest.json",
    });
    await again.writeFile("manifest.json", new TextEncoder().encode("{}"));
    await again.commit();
    assert.deepEqual(listDir(out), ["manifest.json"]);
    assert.deepEqual(listDir(dir), ["in.bin", "x"]);

    const aborted = await createAtomicDirectory(`${dir}/y`);
    await aborted.writeFile("z", new Uint8Array(1));
    await aborted.abort();
    assert.deepEqual(listDir(dir), ["in.bin", "x"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
