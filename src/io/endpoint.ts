/**
 * Socket endpoints: `unix:PATH` and `tcp:HOST:PORT`
 * (QEMU's own spelling for `migrate` and `-incoming`), and the loopback test
 * that decides whether a TCP endpoint needs `--allow-remote`.
 *
 * @module
 */

/** A socket endpoint. */
export type Endpoint =
  | { transport: "unix"; path: string }
  | { transport: "tcp"; hostname: string; port: number };

/**
 * Parse `unix:PATH` or `tcp:HOST:PORT` (IPv6 hosts in brackets:
 * `tcp:[::1]:4444`; an empty host means `127.0.0.1`).
 *
 * @param text The endpoint as given on the command line.
 * @returns The endpoint.
 * @throws {TypeError} when the text is not a valid endpoint.
 *
 * @example
 * ```ts
 * import { parseEndpoint } from "@vmem-dump/vmem-dump";
 * console.log(parseEndpoint("tcp:127.0.0.1:4444")); // { transport: "tcp", hostname: "127.0.0.1", port: 4444 }
 * console.log(parseEndpoint("unix:/run/mig.sock")); // { transport: "unix", path: "/run/mig.sock" }
 * ```
 */
export function parseEndpoint(text: string): Endpoint {
  if (text.startsWith("unix:")) {
    const path = text.slice(5);
    if (path === "" || path.includes("\0")) {
      throw new TypeError(`Invalid unix endpoint ${JSON.stringify(text)}: empty path`);
    }
    return { transport: "unix", path };
  }
  if (text.startsWith("tcp:")) {
    const rest = text.slice(4);
    let hostname: string;
    let portText: string;
    const m6 = /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(rest);
    if (m6) {
      hostname = m6[1]!;
      portText = m6[2]!;
    } else {
      const cut = rest.lastIndexOf(":");
      if (cut < 0) {
        throw new TypeError(`Invalid tcp endpoint ${JSON.stringify(text)}: expected tcp:HOST:PORT`);
      }
      hostname = rest.slice(0, cut);
      portText = rest.slice(cut + 1);
      if (hostname.includes(":")) {
        throw new TypeError(
          `Invalid tcp endpoint ${
            JSON.stringify(text)
          }: write IPv6 hosts in brackets, tcp:[::1]:PORT`,
        );
      }
    }
    if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) {
      throw new TypeError(`Invalid tcp endpoint ${JSON.stringify(text)}: port must be 0..65535`);
    }
    return {
      transport: "tcp",
      hostname: hostname === "" ? "127.0.0.1" : hostname,
      port: Number(portText),
    };
  }
  throw new TypeError(
    `Invalid endpoint ${JSON.stringify(text)}: expected unix:PATH or tcp:HOST:PORT`,
  );
}

/**
 * Whether a host name or address is loopback-only: `localhost`,
 * `127.0.0.0/8`, `::1` (and `::ffff:127.x.y.z`).
 *
 * @param hostname Host name or literal address.
 * @returns `true` for loopback.
 *
 * @example
 * ```ts
 * import { isLoopbackHost } from "./endpoint.ts";
 * console.log(isLoopbackHost("127.0.0.1"), isLoopbackHost("0.0.0.0")); // true false
 * ```
 */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.toLowerCase();
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(v4);
  return m !== null && m.slice(1).every((x) => Number(x) <= 255) && m[1] === "127";
}

/**
 * The endpoint in QEMU's spelling.
 *
 * @param endpoint The endpoint.
 * @returns `unix:PATH` or `tcp:HOST:PORT`.
 *
 * @example
 * ```ts
 * import { formatEndpoint } from "./endpoint.ts";
 * console.log(formatEndpoint({ transport: "tcp", hostname: "::1", port: 4444 })); // tcp:[::1]:4444
 * ```
 */
export function formatEndpoint(endpoint: Endpoint): string {
  if (endpoint.transport === "unix") return `unix:${endpoint.path}`;
  const host = endpoint.hostname.includes(":") ? `[${endpoint.hostname}]` : endpoint.hostname;
  return `tcp:${host}:${endpoint.port}`;
}
