/**
 * What the cluster egress proxy sends a daemon for agentbox.internal (egress/api-relay.ts) and how the
 * proof is checked (egress/gateway-proof.ts): the sandbox's proxy credential, hop-by-hop headers and
 * any identity a sandbox claims never reach the daemon; a body keeps its framing; the proof is bound
 * to its sandbox and secret and is not the sandbox's egress credential.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseApiUrl, relayHeaders } from '../../src/egress/api-relay.js';
import { egressCredential } from '../../src/egress/cluster-proxy.js';
import { GATEWAY_PROOF_HEADER, GATEWAY_SANDBOX_HEADER, gatewayProof, verifyGatewayProof } from '../../src/egress/gateway-proof.js';

const SECRET = 'gateway-unit-test-secret-0123456789abcdef';

test('relay headers: the proxy credential, hop-by-hop, Connection-listed and identity headers are dropped; the token, Host, sandbox and proof set', () => {
  const out = relayHeaders(
    {
      host: 'agentbox.internal',
      authorization: 'Bearer abx_sbt_x',
      'proxy-authorization': 'Basic c2J4X2E6Y3JlZA==',
      connection: 'keep-alive, x-drop-me',
      'x-drop-me': '1',
      'keep-alive': 'timeout=5',
      upgrade: 'websocket',
      expect: '100-continue',
      te: 'trailers',
      forwarded: 'for=1.2.3.4',
      'x-forwarded-for': '1.2.3.4',
      'x-real-ip': '1.2.3.4',
      [GATEWAY_SANDBOX_HEADER]: 'sbx_other',
      [GATEWAY_PROOF_HEADER]: 'forged',
      'x-agentbox-gateway-anything': 'x',
      'content-type': 'application/json',
      'content-length': '12',
      accept: 'text/event-stream',
    },
    { host: 'agentbox.agentbox.svc:8080', sandboxId: 'sbx_mine', proof: 'PROOF' },
  );
  assert.deepEqual(out, {
    host: 'agentbox.agentbox.svc:8080',
    authorization: 'Bearer abx_sbt_x',
    'content-type': 'application/json',
    'content-length': '12',
    accept: 'text/event-stream',
    [GATEWAY_SANDBOX_HEADER]: 'sbx_mine',
    [GATEWAY_PROOF_HEADER]: 'PROOF',
  });
});

test('relay headers: a chunked body stays chunked (never unframed); a Content-Length body keeps its length', () => {
  const to = { host: 'api:8080', sandboxId: 'sbx_mine', proof: 'P' };
  assert.equal(relayHeaders({ 'transfer-encoding': 'chunked' }, to)['transfer-encoding'], 'chunked');
  const sized = relayHeaders({ 'content-length': '5' }, to);
  assert.equal(sized['content-length'], '5');
  assert.equal(sized['transfer-encoding'], undefined);
});

test('gateway proof: only for its sandbox and secret; not the egress credential; a short secret verifies nothing', () => {
  const proof = gatewayProof(SECRET, 'sbx_mine');
  assert.equal(verifyGatewayProof(SECRET, 'sbx_mine', proof), true);
  assert.equal(verifyGatewayProof(SECRET, 'sbx_other', proof), false, 'another sandbox');
  assert.equal(verifyGatewayProof(`${SECRET}-2`, 'sbx_mine', proof), false, 'another secret');
  assert.equal(verifyGatewayProof(SECRET, 'sbx_mine', egressCredential(SECRET, 'sbx_mine')), false, 'the credential the sandbox holds');
  assert.equal(verifyGatewayProof(SECRET, 'sbx_mine', proof.slice(1)), false, 'a prefix');
  assert.equal(verifyGatewayProof('', 'sbx_mine', gatewayProof('', 'sbx_mine')), false, 'an empty secret');
  assert.equal(verifyGatewayProof(SECRET, 'sbx_mine, sbx_other', gatewayProof(SECRET, 'sbx_mine, sbx_other')), false, 'not a sandbox id');
});

test('AGENTBOX_API_URL: http(s) origin only; unset is undefined; a path, credentials or another scheme are refused with the reason', () => {
  assert.equal(parseApiUrl(undefined), undefined);
  assert.equal(parseApiUrl(' '), undefined);
  assert.equal(parseApiUrl('http://agentbox.agentbox.svc:8080')?.host, 'agentbox.agentbox.svc:8080');
  assert.equal(parseApiUrl('https://api.example/')?.protocol, 'https:');
  for (const [bad, why] of [['http://a:8080/v1', /no path/], ['http://u:p@a:8080', /user:password/], ['ftp://a', /http/], ['not a url', /not a URL/]] as const) {
    assert.throws(() => parseApiUrl(bad), (err: Error & { code?: string; hint?: string }) => err.code === 'bad_request' && why.test(err.message) && /AGENTBOX_API_URL=/.test(err.hint ?? ''), bad);
  }
});
