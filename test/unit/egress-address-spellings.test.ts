/**
 * Every spelling of a closed address or of a denied name is judged as the thing it reaches
 * (issue 14, finding 2). Tables of attacker spellings that must be refused, and of ordinary public
 * addresses and names that must keep working. Only pure functions: the proxy end to end is in
 * proxy-attacks.test.ts and sandbox-egress.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressRules } from '../../src/egress/addresses.js';
import { decideHost, type HostRules } from '../../src/egress/rules.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { resolveEgressApproval } from '../../src/policy/resolve.js';
import { hostMatches } from '../../src/policy/resolve.js';

const closed = new AddressRules([]);

/** [spelling, the rule it must be refused by] */
const CLOSED_ADDRESSES: readonly (readonly [string, RegExp])[] = [
  // IPv4-mapped IPv6, hex and dotted, every compression and case
  ['::ffff:7f00:1', /loopback/],
  ['::FFFF:7F00:0001', /loopback/],
  ['0:0:0:0:0:ffff:7f00:1', /loopback/],
  ['0000:0000:0000:0000:0000:ffff:7f00:0001', /loopback/],
  ['0::ffff:7f00:1', /loopback/],
  ['::0:ffff:7f00:1', /loopback/],
  ['::ffff:127.0.0.1', /loopback/],
  ['0:0:0:0:0:ffff:127.0.0.1', /loopback/],
  ['::ffff:a9fe:a9fe', /metadata_address/],
  ['::ffff:169.254.169.254', /metadata_address/],
  ['::ffff:a00:1', /private/],
  ['::ffff:c0a8:101', /private/],
  ['::ffff:0:0', /this-network/],
  // IPv4-compatible (deprecated) and IPv4-translated
  ['::7f00:1', /loopback/],
  ['::127.0.0.1', /loopback/],
  ['::a9fe:a9fe', /metadata_address/],
  ['::ffff:0:7f00:1', /loopback/],
  ['::ffff:0:127.0.0.1', /loopback/],
  // NAT64 well-known and local-use, 6to4, Teredo
  ['64:ff9b::7f00:1', /loopback/],
  ['64:ff9b::127.0.0.1', /loopback/],
  ['64:ff9b::a9fe:a9fe', /metadata_address/],
  ['64:ff9b::a00:1', /private/],
  ['64:ff9b:1::808:808', /NAT64/],
  ['2002:7f00:1::1', /loopback/],
  ['2002:a9fe:a9fe::', /metadata_address/],
  ['2002:c0a8:101:0:0:0:0:1', /private/],
  ['2001:0:4136:e378:8000:63bf:80ff:fffe', /IETF|loopback/],
  ['2001::', /IETF/],
  // unspecified: on Linux a connect to it reaches this host
  ['::', /unspecified/],
  ['0::0', /unspecified/],
  ['0.0.0.0', /this-network/],
  ['0', /this-network/],
  ['::1', /loopback/],
  ['0:0:0:0:0:0:0:1', /loopback/],
  // every IPv4 literal spelling getaddrinfo or a URL parser accepts
  ['2130706433', /loopback/],
  ['0x7f000001', /loopback/],
  ['0X7F000001', /loopback/],
  ['017700000001', /loopback/],
  ['0177.0.0.1', /loopback/],
  ['0x7f.0.0.1', /loopback/],
  ['0x7f.1', /loopback/],
  ['127.1', /loopback/],
  ['127.0.1', /loopback/],
  ['127.0.0.1.', /loopback/],
  ['127.000.000.001', /loopback/],
  ['0251.0376.0251.0376', /metadata_address/],
  ['0xa9fea9fe', /metadata_address/],
  ['2852039166', /metadata_address/],
  ['169.254.43518', /metadata_address/],
  ['10.1', /private/],
  ['0xa.0.0.1', /private/],
  // the rest of the special-purpose space
  ['fe80::1', /link-local/],
  ['FE80::1', /link-local/],
  ['fd00:ec2::254', /metadata_address/],
  ['FD00:EC2:0:0:0:0:0:254', /metadata_address/],
  ['fd20:ce::254', /metadata_address/],
  ['192.0.0.192', /metadata_address/],
  ['::ffff:c000:c0', /metadata_address/],
  ['fd12::1', /unique local/],
  ['ff02::1', /multicast/],
  ['100::1', /discard/],
  ['192.88.99.1', /6to4 relay/],
  ['255.255.255.255', /reserved/],
];

const NOT_ADDRESSES = ['fe80::1%lo', 'fe80::1%25lo', '[::1]', '::ffff:7f00:1%eth0', '1.2.3.4.5', '1.2.3.256', '::ffff:127.0.0.1.', '08.0.0.1', '0x1g.0.0.1', '1:2:3:4:5:6:7:8:9', '::ffff::1', ':::1', '', ' 127.0.0.1', '127.0.0.1 '];

const PUBLIC_ADDRESSES = ['8.8.8.8', '93.184.216.34', '198.51.100.7', '1.1.1.1', '2606:4700::1111', '2606:4700:4700::1111', '2a00:1450:4001::200e', '::ffff:808:808', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1', '134744072'];

describe('addresses: one canonical form before the range check', () => {
  for (const [spelling, rule] of CLOSED_ADDRESSES) {
    test(`${JSON.stringify(spelling)} is refused (${rule.source})`, () => {
      const v = closed.check(spelling);
      assert.equal(v.allowed, false, `${spelling} passed as ${v.rule}`);
      assert.match(v.rule, rule);
    });
  }

  test('what is not exactly an address (zone ids, brackets, junk, spaces) is refused, never guessed at', () => {
    for (const s of NOT_ADDRESSES) assert.equal(closed.check(s).allowed, false, JSON.stringify(s));
  });

  test('public addresses keep working, in any spelling that reaches them', () => {
    for (const a of PUBLIC_ADDRESSES) assert.deepEqual(closed.check(a), { allowed: true, rule: 'public_address' }, a);
  });

  test('allowRanges opens the address in every spelling, and only that address', () => {
    const r = new AddressRules(['127.0.0.1/32']);
    for (const s of ['127.0.0.1', '::ffff:7f00:1', '::ffff:127.0.0.1', '2130706433', '127.1']) assert.equal(r.check(s).allowed, true, s);
    for (const s of ['127.0.0.2', '::ffff:7f00:2', '::1', '127.0.1.1']) assert.equal(r.check(s).allowed, false, s);
    // A mapped range in the policy means the IPv4 range.
    assert.equal(new AddressRules(['::ffff:10.77.0.0/112']).check('10.77.1.2').allowed, true);
    // Opening a wide range never opens a metadata address inside it, in any spelling.
    const wide = new AddressRules(['169.254.0.0/16', '::ffff:0:0/96', 'fc00::/7', '192.0.0.0/24']);
    for (const s of ['169.254.169.254', '::ffff:a9fe:a9fe', '0xa9fea9fe', '64:ff9b::a9fe:a9fe', 'fd00:ec2::254', 'fd20:ce::254', '192.0.0.192']) assert.equal(wide.check(s).allowed, false, s);
  });
});

describe('names: one canonical form before any list is consulted', () => {
  const open: HostRules = { mode: 'open', allow: [], globalDeny: ['blocked.example', '*.evil.test'] };

  test('no spelling of a deny-listed name gets through in open mode', () => {
    const spellings = [
      'blocked.example', 'BLOCKED.EXAMPLE', 'Blocked.Example.', 'blocked.example..', 'blocked%2Eexample', 'bl%6Fcked.example',
      'blocked\u3002example', 'blocked\uff0eexample', 'blocked\uff61example', '\uff42\uff4c\uff4f\uff43\uff4b\uff45\uff44.example',
      'blo\u00adcked.example', 'blo\u200bcked.example', 'a.b.evil.test', 'A.EVIL.TEST.', 'x\u3002evil\u3002test',
    ];
    for (const s of spellings) {
      const v = decideHost(open, s, 443);
      assert.equal(v.allowed, false, `${JSON.stringify(s)} got through as ${v.rule}`);
    }
    assert.deepEqual(decideHost(open, 'example.com', 443), { allowed: true, rule: 'mode:open' });
    assert.deepEqual(decideHost(open, 'not-blocked.example', 443), { allowed: true, rule: 'mode:open' });
  });

  test('no spelling of a cloud-metadata name gets through, whatever the lists say', () => {
    const anything: HostRules = { mode: 'allowlist', allow: ['*.google.internal', 'metadata.google.internal', 'metadata'], globalDeny: [] };
    for (const s of ['metadata.google.internal', 'METADATA.GOOGLE.INTERNAL.', 'metadata.google.internal\u3002', 'metadata%2Egoogle.internal', '\uff4detadata.google.internal', 'Metadata', 'metadata.']) {
      assert.equal(decideHost(anything, s, 80).rule, 'metadata_name', s);
      assert.equal(decideHost({ ...anything, mode: 'open' }, s, 80).rule, 'metadata_name', s);
    }
  });

  test('a host that is not a valid name or address is refused, not resolved as written', () => {
    const bad = ['exa mple.com', 'a@b.com', 'user:pw@b.com', 'a/b.com', 'a\\b.com', 'a..b.com', '.a.com', '-a.com', 'a-.com', 'a%zz.com', 'a%252e.com', 'a%00.com', 'xn--zz.com',
      'foo.123', '1.2.3.256', '1.2.3.4.5', '0x1g.1', `${'a'.repeat(64)}.com`, `${'a.'.repeat(127)}com`, '[::ffff:7f00:1', 'fe80::1%lo', '[fe80::1%25lo]', 'a\n.com', 'a\u0000.com', '*.example.com', ''];
    for (const s of bad) assert.deepEqual(decideHost(open, s, 443), { allowed: false, rule: 'invalid_host' }, JSON.stringify(s));
  });

  test('IDN names match their punycode form both ways', () => {
    const rules: HostRules = { mode: 'allowlist', allow: ['bücher.example'], globalDeny: [] };
    assert.equal(decideHost(rules, 'xn--bcher-kva.example', 443).allowed, true);
    assert.equal(decideHost(rules, 'BÜCHER.example', 443).allowed, true);
    assert.equal(hostMatches('xn--bcher-kva.example', 'bücher.example:443'), true);
  });

  test('an allowlisted IP literal matches every spelling of itself', () => {
    const rules: HostRules = { mode: 'allowlist', allow: ['93.184.216.34', '[2606:4700::1111]:443'], globalDeny: [] };
    for (const s of ['93.184.216.34', '::ffff:5db8:d822', '1572395042', '0x5d.0xb8.0xd8.0x22']) assert.equal(decideHost(rules, s, 443).allowed, true, s);
    assert.equal(decideHost(rules, '2606:4700:0:0:0:0:0:1111', 443).allowed, true);
    assert.equal(decideHost(rules, '2606:4700::1112', 443).allowed, false);
  });

  test('an allow entry without a port covers ports 80 and 443 only; other ports must be named', () => {
    const rules: HostRules = { mode: 'allowlist', allow: ['github.com', 'git.example.org:22'], globalDeny: [] };
    assert.equal(decideHost(rules, 'github.com', 443).allowed, true);
    assert.equal(decideHost(rules, 'github.com', 80).allowed, true);
    for (const port of [22, 25, 8080, 6379, 3128]) assert.deepEqual(decideHost(rules, 'github.com', port), { allowed: false, rule: 'not_allowlisted' }, String(port));
    assert.equal(decideHost(rules, 'git.example.org', 22).allowed, true);
    assert.equal(decideHost(rules, 'git.example.org', 443).allowed, false);
  });
});

describe('policy time: an allowlist entry that names a closed address is refused in every spelling', () => {
  // Metadata names are refused by the proxy whatever a list says (rules.ts), so they are not listed here.
  const SPELLINGS = ['localhost', 'LocalHost.:8080', 'api.localhost', 'ip6-localhost', '127.0.0.1', '[::ffff:7f00:1]', '[::ffff:7f00:1]:8080', '[0:0:0:0:0:ffff:7f00:1]:8080', '2130706433', '0x7f.1:80', '127.1', '[::1]:22', '[::]', '0.0.0.0', '169.254.169.254', '[::ffff:a9fe:a9fe]', '10.0.0.1', '[64:ff9b::a00:1]', '[fe80::1]'];

  test('in the policy file, with the line of the entry', () => {
    for (const s of SPELLINGS) {
      const r = parsePolicyText(`version: 1\nprofiles:\n  p:\n    egress:\n      mode: allowlist\n      allow:\n        - example.com\n        - "${s}"\n`, 'p.yaml');
      assert.equal(r.kind, 'invalid', `${s} was accepted`);
      if (r.kind !== 'invalid') continue;
      assert.equal(r.line, 8, s);
      assert.match(r.reason, /closed address/, s);
    }
    const preset = parsePolicyText('version: 1\negress:\n  presets:\n    mine: [pypi.org, "[::ffff:7f00:1]:443"]\n', 'p.yaml');
    assert.equal(preset.kind, 'invalid');
  });

  test('in a create request and in a live approval, unless allowRanges opens it', () => {
    const parsed = parsePolicyText('version: 1\nprofiles:\n  web: { egress: { mode: open } }\n', 'p.yaml');
    assert.equal(parsed.kind, 'ok');
    if (parsed.kind !== 'ok') return;
    for (const s of SPELLINGS) {
      assert.throws(() => resolveEgressApproval(parsed.policy, 'web', 'allowlist', s), (e: { code?: string; hint?: string }) => e.code === 'policy_denied' && /allowRanges/.test(e.hint ?? ''), s);
    }
    assert.deepEqual(resolveEgressApproval(parsed.policy, 'web', 'allowlist', '93.184.216.34'), { mode: 'allowlist', allow: ['93.184.216.34'] });
    const opened = parsePolicyText('version: 1\nprofiles:\n  web: { egress: { mode: open } }\negress:\n  allowRanges: [127.0.0.1/32]\n', 'p.yaml');
    assert.equal(opened.kind, 'ok');
    if (opened.kind !== 'ok') return;
    assert.deepEqual(resolveEgressApproval(opened.policy, 'web', 'allowlist', '[::ffff:7f00:1]:8080').allow, ['[::ffff:7f00:1]:8080']);
    assert.throws(() => resolveEgressApproval(opened.policy, 'web', 'allowlist', '127.0.0.2'));
  });
});
