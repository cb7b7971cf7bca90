/**
 * One member of the shared `out` fixture set (QEMU 7.2, default profile) as a
 * file, for benchmarks: streamed once out of `shared/realdata/out/fixtures.tar.zst`
 * (`zstd | tar -xO`; the 6.7 GB set is never unpacked) into
 * `.cache/bench/out-<member>`, checked against the producer's SHA-256, and
 * marked with a `.sha256` sidecar so later runs (of any benchmark) reuse it.
 *
 * @module
 */

import { existsSync, withCacheLock } from "../tests/_util/lock.ts";
import { sha256File } from "../tests/_util/hashing.ts";
import { realdataFacts, realdataSharedDir } from "../tests/_util/realdata.ts";

const CACHE_DIR = new URL("../.cache/bench/", import.meta.url).pathname;

/**
 * The path of `member` of the `out` set, streamed out of its archive once.
 *
 * @param member File name inside the archive. @default {"s3-malicious.mig"}
 * @returns The cached, verified file.
 * @throws {Error} when the archive is missing or the member's SHA-256 is wrong.
 */
export async function outSetFile(member = "s3-malicious.mig"): Promise<string> {
  const path = `${CACHE_DIR}out-${member}`;
  const want = realdataFacts("out").sha256[member];
  if (want === undefined) throw new Error(`${member} is not in the out set's SHA256SUMS.payload`);
  const done = () => {
    try {
      return existsSync(path) && Deno.readTextFileSync(`${path}.sha256`).trim() === want;
    } catch {
      return false;
    }
  };
  Deno.mkdirSync(CACHE_DIR, { recursive: true });
  await withCacheLock(`${path}.lock`, done, async () => {
    const tmp = `${path}.tmp-${Deno.pid}`;
    const archive = `${realdataSharedDir("out")}/fixtures.tar.zst`;
    // tar stops after the member, so zstd dies of SIGPIPE: no pipefail; the checksum decides.
    await new Deno.Command("bash", {
      args: [
        "-c",
        'zstd -q -d --long=30 -c -- "$1" 2>/dev/null | tar -xO --occurrence=1 -f - "$2" > "$3"',
        "extract",
        archive,
        member,
        tmp,
      ],
      stderr: "inherit",
    }).output();
    const got = await sha256File(tmp);
    if (got !== want) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(`${member} from ${archive}: SHA-256 ${got}, expected ${want}`);
    }
    await Deno.rename(tmp, path);
    await Deno.writeTextFile(`${path}.sha256`, want + "\n");
  });
  return path;
}
