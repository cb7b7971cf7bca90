/** Bytes ↔ string without loss: each byte is one UTF-16 code unit (idstrs, machine names). */
export function latin1Decode(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.byteLength; i++) s += String.fromCharCode(bytes[i]!);
  return s;
}

/** Inverse of {@linkcode latin1Decode}; characters above 0xff are a caller bug. */
export function latin1Encode(text: string): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`Cannot encode ${JSON.stringify(text)}: not a byte string`);
    out[i] = c;
  }
  return out;
}
