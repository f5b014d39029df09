/** The SNI reader of CONNECT tunnels, on ClientHellos node's own TLS client writes (over a loopback socket pair). */
import assert from 'node:assert/strict';
import { createServer, connect, type AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { connect as tlsConnect } from 'node:tls';
import { clientHelloServerName } from '../../src/egress/tls-sni.js';

/** The first bytes a TLS client sends for `servername` (its ClientHello). */
async function clientHello(servername?: string): Promise<Buffer> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const got = new Promise<Buffer>((resolve) =>
    server.once('connection', (s) => {
      s.once('data', (c: Buffer) => {
        resolve(c);
        s.destroy();
      });
    }),
  );
  const raw = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const tls = tlsConnect({ socket: raw, ...(servername ? { servername } : {}), rejectUnauthorized: false });
  tls.on('error', () => undefined);
  const hello = await got;
  tls.destroy();
  server.close();
  return hello;
}

/** The same handshake bytes cut into records of at most `size` bytes. */
function reRecord(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size);
    const h = Buffer.from([0x16, 3, 1, 0, 0]);
    h.writeUInt16BE(part.length, 3);
    out.push(h, part);
  }
  return Buffer.concat(out);
}

describe('TLS ClientHello server name', () => {
  test('reads the SNI, also over several records, and waits for the rest of a partial hello', async () => {
    const hello = await clientHello('Site.Example');
    assert.deepEqual(clientHelloServerName(hello), { kind: 'hello', serverName: 'Site.Example' });
    assert.deepEqual(clientHelloServerName(reRecord(hello, 40)), { kind: 'hello', serverName: 'Site.Example' });
    assert.deepEqual(clientHelloServerName(hello.subarray(0, 3)), { kind: 'need_more' });
    assert.deepEqual(clientHelloServerName(hello.subarray(0, hello.length - 1)), { kind: 'need_more' });
    assert.deepEqual(clientHelloServerName(reRecord(hello, 40).subarray(0, 100)), { kind: 'need_more' });
  });

  test('no SNI is a hello without a name; what is not TLS is not_tls; broken or interrupted hellos are malformed', async () => {
    assert.deepEqual(clientHelloServerName(await clientHello()), { kind: 'hello', serverName: null });
    assert.deepEqual(clientHelloServerName(Buffer.from('SSH-2.0-x\r\n')), { kind: 'not_tls' });
    const hello = await clientHello('a.example');
    const interrupted = Buffer.concat([reRecord(hello, 40).subarray(0, 45), Buffer.from([0x17, 3, 3, 0, 1, 0])]);
    assert.equal(clientHelloServerName(interrupted).kind, 'malformed');
    const notHello = Buffer.from(hello);
    notHello[5] = 2; // a ServerHello from the client
    assert.equal(clientHelloServerName(notHello).kind, 'malformed');
    const zeroRecord = Buffer.from([0x16, 3, 1, 0, 0]);
    assert.equal(clientHelloServerName(zeroRecord).kind, 'malformed');
  });

  test('a ClientHello with two server_name extensions is refused as malformed', async () => {
    const hello = await clientHello('a.example');
    // Find the server_name extension and append a second copy of it to the extension block.
    const hs = hello.subarray(5 + 4);
    let p = 2 + 32;
    p += 1 + (hs[p] as number);
    p += 2 + hs.readUInt16BE(p);
    p += 1 + (hs[p] as number);
    const extLenAt = p;
    let q = p + 2;
    const end = q + hs.readUInt16BE(extLenAt);
    let sni: Buffer | undefined;
    while (q < end) {
      const len = hs.readUInt16BE(q + 2);
      if (hs.readUInt16BE(q) === 0) sni = hs.subarray(q, q + 4 + len);
      q += 4 + len;
    }
    assert.ok(sni);
    const evil = Buffer.from(sni);
    evil.write('b', evil.length - 'a.example'.length, 'latin1'); // b.example
    const newHs = Buffer.concat([hs.subarray(0, extLenAt), Buffer.alloc(2), hs.subarray(extLenAt + 2, end), evil]);
    newHs.writeUInt16BE(end - extLenAt - 2 + evil.length, extLenAt);
    const hsHead = Buffer.from([1, 0, 0, 0]);
    hsHead.writeUIntBE(newHs.length, 1, 3);
    const record = Buffer.from([0x16, 3, 1, 0, 0]);
    record.writeUInt16BE(newHs.length + 4, 3);
    assert.deepEqual(clientHelloServerName(Buffer.concat([record, hsHead, newHs])), { kind: 'malformed', why: 'two server_name extensions' });
  });
});
