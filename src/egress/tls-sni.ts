/**
 * The server name (SNI) of a TLS ClientHello, read from the first bytes a client sends into a
 * CONNECT tunnel, so that a tunnel opened to an allowed host cannot carry a handshake for another
 * (domain fronting through an allowed tunnel). Only the cleartext SNI can be checked: with
 * Encrypted Client Hello the outer name is all anyone on the path sees.
 */

export const TLS_HANDSHAKE = 0x16;
/** A ClientHello larger than this is not waited for (refused): real ones are a few KiB (post-quantum keys included). */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

export type SniResult =
  | { kind: 'need_more' }
  | { kind: 'not_tls' }
  | { kind: 'malformed'; why: string }
  | { kind: 'hello'; serverName: string | null };

/** What the bytes so far say: `need_more` until one whole ClientHello (possibly over several records) is there. */
export function clientHelloServerName(buf: Buffer): SniResult {
  if (buf.length === 0) return { kind: 'need_more' };
  if (buf[0] !== TLS_HANDSHAKE) return { kind: 'not_tls' };
  // Reassemble the handshake layer from consecutive handshake records.
  const parts: Buffer[] = [];
  let off = 0;
  let have = 0;
  let want = -1;
  while (want < 0 || have < want) {
    if (off + 5 > buf.length) return buf.length > MAX_CLIENT_HELLO_BYTES ? { kind: 'malformed', why: 'too large' } : { kind: 'need_more' };
    if (buf[off] !== TLS_HANDSHAKE) return { kind: 'malformed', why: 'ClientHello interrupted by another record type' };
    const len = buf.readUInt16BE(off + 3);
    if (len === 0 || len > 16384 + 2048) return { kind: 'malformed', why: 'bad record length' };
    if (off + 5 + len > buf.length) return buf.length > MAX_CLIENT_HELLO_BYTES ? { kind: 'malformed', why: 'too large' } : { kind: 'need_more' };
    parts.push(buf.subarray(off + 5, off + 5 + len));
    have += len;
    off += 5 + len;
    if (want < 0 && have >= 4) {
      const hs = Buffer.concat(parts);
      if (hs[0] !== 1) return { kind: 'malformed', why: 'first handshake message is not a ClientHello' };
      want = 4 + hs.readUIntBE(1, 3);
      if (want > MAX_CLIENT_HELLO_BYTES) return { kind: 'malformed', why: 'too large' };
    }
  }
  return parseClientHello(Buffer.concat(parts).subarray(4, want));
}

function parseClientHello(b: Buffer): SniResult {
  const bad = (why: string): SniResult => ({ kind: 'malformed', why });
  let p = 2 + 32; // legacy_version, random
  if (p + 1 > b.length) return bad('short');
  p += 1 + (b[p] as number); // session id
  if (p + 2 > b.length) return bad('short');
  p += 2 + b.readUInt16BE(p); // cipher suites
  if (p + 1 > b.length) return bad('short');
  p += 1 + (b[p] as number); // compression methods
  if (p === b.length) return { kind: 'hello', serverName: null }; // no extensions at all
  if (p + 2 > b.length) return bad('short');
  const end = p + 2 + b.readUInt16BE(p);
  if (end > b.length) return bad('extensions overrun');
  p += 2;
  let serverName: string | null = null;
  let seen = false;
  while (p + 4 <= end) {
    const type = b.readUInt16BE(p);
    const len = b.readUInt16BE(p + 2);
    p += 4;
    if (p + len > end) return bad('extension overrun');
    if (type === 0) {
      // Two server_name extensions could be read differently by the proxy and the server.
      if (seen) return bad('two server_name extensions');
      seen = true;
      const names = parseServerNameList(b.subarray(p, p + len));
      if (typeof names === 'string') return bad(names);
      if (names.length > 1) return bad('more than one host_name');
      serverName = names[0] ?? null;
    }
    p += len;
  }
  if (p !== end) return bad('trailing bytes in extensions');
  return { kind: 'hello', serverName };
}

function parseServerNameList(e: Buffer): string[] | string {
  if (e.length < 2) return 'short server_name';
  const end = 2 + e.readUInt16BE(0);
  if (end !== e.length) return 'server_name length mismatch';
  const out: string[] = [];
  let p = 2;
  while (p < end) {
    if (p + 3 > end) return 'short server_name entry';
    const type = e[p] as number;
    const len = e.readUInt16BE(p + 1);
    p += 3;
    if (p + len > end) return 'server_name entry overrun';
    if (type === 0) out.push(e.subarray(p, p + len).toString('latin1'));
    p += len;
  }
  return out;
}
