import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { AgentboxError } from '../../src/contract/errors.js';
import type { CreateSandboxRequest } from '../../src/contract/requests.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { hostMatches, resolveEgressApproval, resolveSpec } from '../../src/policy/resolve.js';
import { DEFAULT_POLICY } from '../../src/policy/schema.js';
import type { Policy } from '../../src/policy/schema.js';

function policy(text: string): Policy {
  const r = parsePolicyText(text, 'test.yaml');
  if (r.kind !== 'ok') throw new Error(`test policy invalid: ${JSON.stringify(r)}`);
  return r.policy;
}

const P = policy(`version: 1
images: [busybox, debian]
profiles:
  tiny:   { limits: { memoryMb: 64, pids: 64 }, ttl: 5m }
  pydev:  { image: debian, egress: { mode: allowlist, presets: [pypi], allow: [github.com, "*.github.com", metadata.google.internal] } }
  strong: { runtime: docker, isolation: gvisor }
  boxed:  { runtime: docker, isolation: container }
  web:    { egress: { mode: open } }
  offline: { egress: { mode: none }, execTimeout: 10s, idleTimeout: 1m, outputLimitBytes: 4096 }
egress:
  presets: { pypi: [pypi.org, files.pythonhosted.org] }
  globalDeny: [metadata.google.internal]
`);

const ctx = { tenant: 'alice', id: 'sbx_test' };
const resolve = (req: CreateSandboxRequest, pol: Policy = P) => resolveSpec(pol, req, ctx);

function denied(fn: () => unknown, code: string, hint?: RegExp): AgentboxError {
  let caught: unknown;
  assert.throws(fn, (err: unknown) => {
    caught = err;
    return err instanceof AgentboxError;
  });
  const err = caught as AgentboxError;
  assert.equal(err.code, code, `${err.code}: ${err.message}`);
  if (hint) assert.match(err.hint ?? '', hint);
  return err;
}

describe('resolveSpec', () => {
  test('an empty request gets the defaults', () => {
    const s = resolve({});
    assert.deepEqual(s, {
      id: 'sbx_test',
      tenant: 'alice',
      image: 'busybox',
      profile: null,
      runtime: 'local',
      isolation: 'namespaces',
      limits: { cpus: 1, memoryMb: 512, pids: 256, diskMb: 1024 },
      egress: { mode: 'none', allow: [] },
      env: {},
      labels: {},
      ttlMs: 3_600_000,
      idleTimeoutMs: 900_000,
      pauseAfterMs: null,
      execTimeoutMs: 120_000,
      outputLimitBytes: 2097152,
    });
  });

  test('a profile\'s pauseAfter becomes pauseAfterMs', () => {
    const r = parsePolicyText('version: 1\nprofiles:\n  nap: { pauseAfter: 90s }\n', 'p.yaml');
    assert.equal(r.kind, 'ok');
    if (r.kind !== 'ok') return;
    assert.equal(resolve({ profile: 'nap' }, r.policy).pauseAfterMs, 90_000);
    assert.equal(resolve({ profile: 'nap' }, r.policy).pauseMode, 'freeze');
    assert.equal(resolve({}, r.policy).pauseAfterMs, null);
  });

  test('pauseAfter { idle, mode }: hibernate or freeze (the default); anything else is a policy error naming the field', () => {
    const r = parsePolicyText('version: 1\nprofiles:\n  sleep: { pauseAfter: { idle: 5m, mode: hibernate } }\n  doze: { pauseAfter: { idle: 30s } }\n', 'p.yaml');
    assert.equal(r.kind, 'ok');
    if (r.kind !== 'ok') return;
    assert.deepEqual([resolve({ profile: 'sleep' }, r.policy).pauseAfterMs, resolve({ profile: 'sleep' }, r.policy).pauseMode], [300_000, 'hibernate']);
    assert.deepEqual([resolve({ profile: 'doze' }, r.policy).pauseAfterMs, resolve({ profile: 'doze' }, r.policy).pauseMode], [30_000, 'freeze']);
    for (const bad of ['{ idle: 5m, mode: sleep }', '{ mode: hibernate }', '{ idle: soon }', '{ idle: 5m, mode: hibernate, extra: 1 }']) {
      const b = parsePolicyText(`version: 1\nprofiles:\n  x: { pauseAfter: ${bad} }\n`, 'p.yaml');
      assert.equal(b.kind, 'invalid', `accepted pauseAfter: ${bad}`);
      if (b.kind === 'invalid') assert.match(b.reason, /pauseAfter/);
    }
  });

  test('rootfs: writable in a profile reaches the spec; readonly and no field leave it out; anything else is a policy error naming the field', () => {
    const r = parsePolicyText('version: 1\nprofiles:\n  install: { rootfs: writable }\n  locked: { rootfs: readonly }\n', 'p.yaml');
    assert.equal(r.kind, 'ok');
    if (r.kind !== 'ok') return;
    assert.equal(resolve({ profile: 'install' }, r.policy).rootfs, 'writable');
    assert.equal(resolve({ profile: 'locked' }, r.policy).rootfs, undefined);
    assert.equal(resolve({}, r.policy).rootfs, undefined);
    for (const bad of ['rw', 'true', '{ mode: writable }']) {
      const b = parsePolicyText(`version: 1\nprofiles:\n  x: { rootfs: ${bad} }\n`, 'p.yaml');
      assert.equal(b.kind, 'invalid', `accepted rootfs: ${bad}`);
      if (b.kind === 'invalid') assert.match(b.reason, /rootfs/);
    }
  });

  test('env and labels are copied', () => {
    const s = resolve({ env: { A: '1' }, labels: { team: 'x' } });
    assert.deepEqual(s.env, { A: '1' });
    assert.deepEqual(s.labels, { team: 'x' });
  });

  test('timeouts and output limit come from the profile', () => {
    const s = resolve({ profile: 'offline' });
    assert.equal(s.execTimeoutMs, 10_000);
    assert.equal(s.idleTimeoutMs, 60_000);
    assert.equal(s.outputLimitBytes, 4096);
    assert.equal(s.ttlMs, 3_600_000);
  });

  describe('profile and image', () => {
    test('an unknown profile is denied with the known ones in the hint', () => {
      denied(() => resolve({ profile: 'huge' }), 'policy_denied', /tiny, pydev, strong/);
      denied(() => resolve({ profile: 'constructor' }), 'policy_denied');
      denied(() => resolve({ profile: 'x' }, DEFAULT_POLICY), 'policy_denied', /built in: desktop/);
    });

    test('the built-in desktop profile: image desktop and room for Chromium; a policy\'s own desktop replaces it; images still pins', () => {
      const s = resolve({ profile: 'desktop' }, DEFAULT_POLICY);
      assert.equal(s.image, 'desktop');
      assert.equal(s.profile, 'desktop');
      assert.deepEqual(s.limits, { cpus: 2, memoryMb: 2048, pids: 1024, diskMb: 4096 });
      denied(() => resolve({ profile: 'desktop', limits: { memoryMb: 4096 } }, DEFAULT_POLICY), 'policy_denied', /profile "desktop"/);
      const own = parsePolicyText('version: 1\nprofiles:\n  desktop:\n    image: my-desktop\n    limits: { memoryMb: 3000 }\n', 'test');
      assert.equal(own.kind, 'ok');
      if (own.kind !== 'ok') return;
      const o = resolve({ profile: 'desktop' }, own.policy);
      assert.equal(o.image, 'my-desktop');
      assert.equal(o.limits.memoryMb, 3000);
      assert.equal(o.limits.cpus, 1, 'replaced whole: the built-in\'s cpus do not leak into the policy\'s own');
      const pinned = parsePolicyText('version: 1\nimages: [busybox]\n', 'test');
      assert.equal(pinned.kind, 'ok');
      if (pinned.kind === 'ok') denied(() => resolve({ profile: 'desktop' }, pinned.policy), 'policy_denied', /allowed images: busybox/);
    });

    test('image comes from request, then profile, then defaults', () => {
      assert.equal(resolve({ profile: 'pydev' }).image, 'debian');
      assert.equal(resolve({ profile: 'pydev', image: 'busybox' }).image, 'busybox');
      assert.equal(resolve({ profile: 'tiny' }).image, 'busybox');
    });

    test('an image outside the allowlist is denied, naming the allowed ones', () => {
      denied(() => resolve({ image: 'ubuntu' }), 'policy_denied', /busybox, debian/);
      assert.equal(resolve({ image: 'ubuntu' }, DEFAULT_POLICY).image, 'ubuntu');
    });
  });

  describe('runtime and isolation', () => {
    test('each runtime gets its own default isolation', () => {
      assert.equal(resolve({ runtime: 'docker' }).isolation, 'container');
      assert.equal(resolve({}).isolation, 'namespaces');
      const s = resolve({ profile: 'strong' });
      assert.equal(s.runtime, 'docker');
      assert.equal(s.isolation, 'gvisor');
    });

    test('an isolation the runtime cannot give is a bad request', () => {
      denied(() => resolve({ isolation: 'gvisor' }), 'bad_request', /namespaces/);
      denied(() => resolve({ runtime: 'docker', isolation: 'namespaces' }), 'bad_request', /container, gvisor/);
    });

    test('a weaker isolation than the profile fixes is denied', () => {
      const err = denied(() => resolve({ profile: 'strong', isolation: 'container' }), 'policy_denied', /profile "strong" requires gvisor/);
      assert.match(err.message, /weaker/);
      denied(() => resolve({ profile: 'strong', runtime: 'local' }), 'policy_denied', /gvisor/);
    });

    test('a stronger isolation than the profile fixes is fine', () => {
      assert.equal(resolve({ profile: 'boxed', isolation: 'gvisor' }).isolation, 'gvisor');
    });

    test('a defaults isolation is raised to what another runtime offers, never lowered', () => {
      const pol = policy('version: 1\ndefaults:\n  isolation: namespaces\n');
      assert.equal(resolve({ runtime: 'docker' }, pol).isolation, 'container');
      const strict = policy('version: 1\ndefaults:\n  runtime: docker\n  isolation: gvisor\n');
      denied(() => resolve({ isolation: 'container' }, strict), 'policy_denied', /the defaults require gvisor/);
    });
  });

  describe('limits', () => {
    test('the profile limits merge over the defaults', () => {
      assert.deepEqual(resolve({ profile: 'tiny' }).limits, { cpus: 1, memoryMb: 64, pids: 64, diskMb: 1024 });
    });

    test('a request may ask for less', () => {
      assert.deepEqual(resolve({ profile: 'tiny', limits: { memoryMb: 32, cpus: 0.5 } }).limits, { cpus: 0.5, memoryMb: 32, pids: 64, diskMb: 1024 });
    });

    test('asking for more memory than the profile allows is denied, naming profile and field', () => {
      const err = denied(() => resolve({ profile: 'tiny', limits: { memoryMb: 128 } }), 'policy_denied');
      assert.equal(err.hint, 'profile "tiny" allows memoryMb up to 64; ask for less or use another profile');
    });

    test('without a profile the hint names the defaults', () => {
      const err = denied(() => resolve({ limits: { cpus: 4 } }), 'policy_denied');
      assert.equal(err.hint, 'the defaults allow cpus up to 1; ask for less or use a profile that allows more');
    });
  });

  describe('ttl', () => {
    test('a shorter ttl is kept, a longer one denied', () => {
      assert.equal(resolve({ profile: 'tiny', ttl: '90s' }).ttlMs, 90_000);
      assert.equal(resolve({ profile: 'tiny', ttl: 60 }).ttlMs, 60_000);
      denied(() => resolve({ profile: 'tiny', ttl: '1h' }), 'policy_denied', /profile "tiny" allows ttl up to 5m/);
      denied(() => resolve({ ttl: '2h' }), 'policy_denied', /the defaults allow ttl up to 1h/);
    });
  });

  describe('egress', () => {
    test('a profile without egress gives none', () => {
      assert.deepEqual(resolve({ profile: 'tiny' }).egress, { mode: 'none', allow: [] });
    });

    test('the profile allowlist is its hosts plus its presets, minus the global deny list', () => {
      assert.deepEqual(resolve({ profile: 'pydev' }).egress, {
        mode: 'allowlist',
        allow: ['github.com', '*.github.com', 'pypi.org', 'files.pythonhosted.org'],
      });
    });

    test('a request may narrow the allowlist to covered hosts', () => {
      assert.deepEqual(resolve({ profile: 'pydev', egress: { allow: ['pypi.org', 'api.github.com:443'] } }).egress, {
        mode: 'allowlist',
        allow: ['pypi.org', 'api.github.com:443'],
      });
      assert.deepEqual(resolve({ profile: 'pydev', egress: { mode: 'none' } }).egress, { mode: 'none', allow: [] });
    });

    test('a host outside the profile allowlist is denied', () => {
      denied(() => resolve({ profile: 'pydev', egress: { allow: ['evil.example'] } }), 'policy_denied', /profile "pydev" allows egress to github\.com/);
      denied(() => resolve({ profile: 'pydev', egress: { allow: ['*.pypi.org'] } }), 'policy_denied');
    });

    test('escalating the egress mode is denied', () => {
      denied(() => resolve({ profile: 'pydev', egress: { mode: 'open' } }), 'policy_denied', /up to allowlist/);
      denied(() => resolve({ profile: 'tiny', egress: { mode: 'open' } }), 'policy_denied');
      denied(() => resolve({ profile: 'offline', egress: { mode: 'allowlist', allow: ['pypi.org'] } }), 'policy_denied', /profile "offline" allows egress up to none/);
      denied(() => resolve({ profile: 'offline', egress: { allow: ['pypi.org'] } }), 'policy_denied');
    });

    test('without a profile a request may ask for an allowlist, never open', () => {
      assert.deepEqual(resolve({ egress: { mode: 'allowlist', allow: ['allowed.example.test:18792'] } }).egress, {
        mode: 'allowlist',
        allow: ['allowed.example.test:18792'],
      });
      denied(() => resolve({ egress: { mode: 'open' } }), 'policy_denied', /the defaults allow egress up to allowlist/);
    });

    test('defaults.egress locks down requests without a profile', () => {
      const pol = policy('version: 1\ndefaults:\n  egress: { mode: none }\n');
      denied(() => resolve({ egress: { mode: 'allowlist', allow: ['a.example'] } }, pol), 'policy_denied');
    });

    test('an open profile allows any host but the denied ones', () => {
      assert.deepEqual(resolve({ profile: 'web' }).egress, { mode: 'open', allow: [] });
      assert.deepEqual(resolve({ profile: 'web', egress: { allow: ['x.example'] } }).egress, { mode: 'allowlist', allow: ['x.example'] });
    });

    test('the global deny list wins over a profile and over a request', () => {
      assert.ok(!resolve({ profile: 'pydev' }).egress.allow.includes('metadata.google.internal'));
      denied(() => resolve({ profile: 'pydev', egress: { allow: ['metadata.google.internal'] } }), 'policy_denied', /globalDeny always wins/);
      denied(() => resolve({ profile: 'web', egress: { allow: ['metadata.google.internal:80'] } }), 'policy_denied', /globalDeny/);
      denied(() => resolve({ egress: { allow: ['METADATA.google.internal.'] } }), 'policy_denied', /globalDeny/);
    });

    test('malformed or broad requested hosts are rejected', () => {
      denied(() => resolve({ egress: { allow: ['*'] } }), 'bad_request');
      denied(() => resolve({ egress: { allow: ['*.com'] } }), 'bad_request', /HOST/);
      denied(() => resolve({ egress: { mode: 'none', allow: ['a.example'] } }), 'bad_request');
    });
  });
});

describe('resolveEgressApproval', () => {
  const withDefaults = policy(`version: 1
defaults:
  egress: { mode: allowlist, allow: [a.example, b.example] }
profiles:
  tiny: { limits: { memoryMb: 64 } }
  pydev: { egress: { mode: allowlist, allow: [github.com] } }
egress:
  globalDeny: [b.example]
`);

  test('a profile without egress of its own approves within defaults.egress, as its create did', () => {
    assert.deepEqual(resolveEgressApproval(withDefaults, 'tiny', 'allowlist', 'a.example'), { mode: 'allowlist', allow: ['a.example'] });
    const err = denied(() => resolveEgressApproval(withDefaults, 'tiny', 'allowlist', 'c.example'), 'policy_denied');
    assert.match(err.message, /profile "tiny"/);
    denied(() => resolveEgressApproval(withDefaults, null, 'allowlist', 'c.example'), 'policy_denied');
  });

  test("a profile's own egress is the ceiling; the deny list wins; a profile gone from the policy is refused", () => {
    assert.deepEqual(resolveEgressApproval(withDefaults, 'pydev', 'allowlist', 'github.com'), { mode: 'allowlist', allow: ['github.com'] });
    denied(() => resolveEgressApproval(withDefaults, 'pydev', 'allowlist', 'a.example'), 'policy_denied');
    denied(() => resolveEgressApproval(withDefaults, null, 'allowlist', 'b.example'), 'policy_denied');
    denied(() => resolveEgressApproval(withDefaults, 'constructor', 'allowlist', 'a.example'), 'policy_denied');
  });
});

describe('hostMatches', () => {
  test('exact names, any port unless one is given', () => {
    assert.equal(hostMatches('example.com', 'example.com'), true);
    assert.equal(hostMatches('example.com', 'EXAMPLE.com:443'), true);
    assert.equal(hostMatches('example.com', 'example.com.'), true);
    assert.equal(hostMatches('example.com', 'www.example.com'), false);
    assert.equal(hostMatches('example.com:443', 'example.com:443'), true);
    assert.equal(hostMatches('example.com:443', 'example.com:80'), false);
    assert.equal(hostMatches('example.com:443', 'example.com'), false);
  });

  test('*.domain matches subdomains only', () => {
    assert.equal(hostMatches('*.example.com', 'a.example.com'), true);
    assert.equal(hostMatches('*.example.com', 'a.b.example.com:8080'), true);
    assert.equal(hostMatches('*.example.com', 'example.com'), false);
    assert.equal(hostMatches('*.example.com', 'badexample.com'), false);
    assert.equal(hostMatches('*.example.com:443', 'a.example.com:80'), false);
  });

  test('IPv6 in brackets, and malformed input never matches', () => {
    assert.equal(hostMatches('[2001:db8::1]:443', '[2001:db8::1]:443'), true);
    assert.equal(hostMatches('example.com', 'exa mple.com'), false);
    assert.equal(hostMatches('example.com', '*.example.com'), false);
  });
});
