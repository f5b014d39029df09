/** The proxy's decisions as pure functions: names first, then the resolved address. */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { AddressRules, normalizeAddress } from '../../src/egress/addresses.js';
import { parseAuthority } from '../../src/egress/proxy.js';
import { parseHostsFile } from '../../src/egress/resolver.js';
import { decideHost, explainDenial, type HostRules } from '../../src/egress/rules.js';

describe('address rules', () => {
  const closed = new AddressRules([]);

  test('public unicast is open; loopback, private, link-local, CGNAT, multicast and friends are closed', () => {
    for (const a of ['93.184.216.34', '198.51.100.7', '2606:4700::1111']) assert.deepEqual(closed.check(a), { allowed: true, rule: 'public_address' }, a);
    const want: Record<string, string> = {
      '127.0.0.1': 'range:loopback',
      '127.255.1.2': 'range:loopback',
      '10.1.2.3': 'range:private',
      '172.20.0.1': 'range:private',
      '192.168.1.1': 'range:private',
      '169.254.1.1': 'range:link-local',
      '100.64.0.1': 'range:carrier-grade NAT',
      '0.0.0.0': 'range:this-network',
      '224.0.0.1': 'range:multicast',
      '255.255.255.255': 'range:reserved',
      '::1': 'range:loopback',
      '::': 'range:unspecified',
      'fd12:3456::1': 'range:unique local (private)',
      'fe80::1': 'range:link-local',
      'ff02::1': 'range:multicast',
    };
    for (const [a, rule] of Object.entries(want)) assert.deepEqual(closed.check(a), { allowed: false, rule }, a);
  });

  test('IPv4-mapped IPv6 is judged as the IPv4 address it carries', () => {
    assert.equal(normalizeAddress('::ffff:127.0.0.1'), '127.0.0.1');
    assert.deepEqual(closed.check('::ffff:10.0.0.1'), { allowed: false, rule: 'range:private' });
    assert.deepEqual(closed.check('::FFFF:169.254.169.254'), { allowed: false, rule: 'metadata_address' });
  });

  test('cloud metadata stays closed even when a range around it is opened; only the exact address opens it', () => {
    const wide = new AddressRules(['169.254.0.0/16', 'fd00::/8']);
    assert.deepEqual(wide.check('169.254.1.1'), { allowed: true, rule: 'allowRanges:169.254.0.0/16' });
    assert.deepEqual(wide.check('169.254.169.254'), { allowed: false, rule: 'metadata_address' });
    assert.deepEqual(wide.check('fd00:ec2::254'), { allowed: false, rule: 'metadata_address' });
    const exact = new AddressRules(['169.254.169.254/32']);
    assert.deepEqual(exact.check('169.254.169.254'), { allowed: true, rule: 'allowRanges:169.254.169.254/32' });
  });

  test('an opened range opens only itself', () => {
    const r = new AddressRules(['10.77.0.0/16', '127.0.0.1/32']);
    assert.equal(r.check('10.77.3.4').allowed, true);
    assert.equal(r.check('10.78.0.1').allowed, false);
    assert.equal(r.check('127.0.0.1').allowed, true);
    assert.equal(r.check('127.0.0.2').allowed, false);
    assert.deepEqual(r.check('not-an-ip'), { allowed: false, rule: 'not_an_address' });
  });
});

describe('host rules', () => {
  const rules: HostRules = { mode: 'allowlist', allow: ['github.com', '*.pythonhosted.org', 'git.example.org:22', 'blocked.example'], globalDeny: ['blocked.example', '*.evil.test'] };

  test('the allowlist decides, with ports and wildcards', () => {
    assert.deepEqual(decideHost(rules, 'github.com', 443), { allowed: true, rule: 'allow:github.com' });
    assert.deepEqual(decideHost(rules, 'GitHub.com.', 80), { allowed: true, rule: 'allow:github.com' });
    assert.deepEqual(decideHost(rules, 'files.pythonhosted.org', 443), { allowed: true, rule: 'allow:*.pythonhosted.org' });
    assert.deepEqual(decideHost(rules, 'pythonhosted.org', 443), { allowed: false, rule: 'not_allowlisted' });
    assert.deepEqual(decideHost(rules, 'git.example.org', 22), { allowed: true, rule: 'allow:git.example.org:22' });
    assert.deepEqual(decideHost(rules, 'git.example.org', 443), { allowed: false, rule: 'not_allowlisted' });
    assert.deepEqual(decideHost(rules, 'api.github.com', 443), { allowed: false, rule: 'not_allowlisted' });
  });

  test('the global deny list wins over the allowlist and over mode open', () => {
    assert.deepEqual(decideHost(rules, 'blocked.example', 443), { allowed: false, rule: 'globalDeny:blocked.example' });
    const open: HostRules = { ...rules, mode: 'open' };
    assert.deepEqual(decideHost(open, 'x.evil.test', 80), { allowed: false, rule: 'globalDeny:*.evil.test' });
    assert.deepEqual(decideHost(open, 'anything.example', 80), { allowed: true, rule: 'mode:open' });
  });

  test('metadata names are refused by name, whatever the lists say', () => {
    const open: HostRules = { mode: 'open', allow: [], globalDeny: [] };
    assert.deepEqual(decideHost(open, 'metadata.google.internal', 80), { allowed: false, rule: 'metadata_name' });
    assert.deepEqual(decideHost({ ...open, mode: 'allowlist', allow: ['metadata.google.internal'] }, 'metadata.google.internal', 80), { allowed: false, rule: 'metadata_name' });
  });

  test('a denial says what was refused, why, and how to ask', () => {
    const text = explainDenial('not_allowlisted', { sandboxId: 'sbx_1', host: 'pypi.org', port: 443, address: null, allow: ['github.com'], quotaMb: 10 });
    assert.match(text, /pypi\.org:443/);
    assert.match(text, /not_allowlisted/);
    assert.match(text, /agentbox egress allow sbx_1 pypi\.org:443/);
    assert.match(explainDenial('range:private', { sandboxId: 'sbx_1', host: 'intranet', port: 80, address: '10.0.0.5', allow: [], quotaMb: 10 }), /10\.0\.0\.5, a private address.*egress\.allowRanges/);
    assert.doesNotMatch(explainDenial('globalDeny:x.test', { sandboxId: 'sbx_1', host: 'x.test', port: 80, address: null, allow: [], quotaMb: 10 }), /egress allow/);
  });
});

describe('parsing', () => {
  test('CONNECT authorities', () => {
    assert.deepEqual(parseAuthority('github.com:443'), { host: 'github.com', port: 443 });
    assert.deepEqual(parseAuthority('[2001:db8::1]:22'), { host: '2001:db8::1', port: 22 });
    for (const bad of ['github.com', 'github.com:0', 'github.com:99999', 'a b:80', 'http://x:80', '[::1:80']) assert.equal(parseAuthority(bad), null, bad);
  });

  test('hosts files', () => {
    const m = parseHostsFile('# comment\n198.51.100.2 site.test Other.test\n\nnot-an-ip bad.test\n10.0.0.1 site.test # twice\n');
    assert.deepEqual(m.get('site.test'), ['198.51.100.2', '10.0.0.1']);
    assert.deepEqual(m.get('other.test'), ['198.51.100.2']);
    assert.equal(m.get('bad.test'), undefined);
  });
});
