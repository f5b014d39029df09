import { afterEach, beforeEach, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentboxError } from '../../src/contract/errors.js';
import { formatPolicyProblem, loadPolicy, loadPolicyFile, parsePolicyText } from '../../src/policy/load.js';
import type { LoadPolicyResult } from '../../src/policy/load.js';
import { DEFAULT_POLICY } from '../../src/policy/schema.js';
import { resolveSpec } from '../../src/policy/resolve.js';

const aliceDigest = createHash('sha256').update('alice-secret-token-0123').digest('hex');

/** The example from ARCHITECTURE.md, with a real digest for <hex>. */
const EXAMPLE = `version: 1
defaults:                        # what a request gets when it names nothing
  runtime: local                 # local | docker (later: microvm, kubernetes)
  image: busybox
  limits: { cpus: 1, memoryMb: 512, pids: 256, diskMb: 1024 }
  ttl: 1h                        # hard lifetime
  idleTimeout: 15m               # no exec/file call for this long -> stopped (reason idle_timeout)
  execTimeout: 2m
  outputLimitBytes: 2097152      # per exec, stdout+stderr; beyond it: truncated: true
images: [busybox, debian]        # allowlist; absent = any image the host has
profiles:
  tiny:   { limits: { memoryMb: 64, pids: 64 }, ttl: 5m }
  pydev:  { image: debian, egress: { mode: allowlist, presets: [pypi], allow: [github.com] } }
  strong: { runtime: docker, isolation: gvisor }
egress:
  presets: { pypi: [pypi.org, files.pythonhosted.org] }
  globalDeny: [metadata.google.internal]   # always wins over any allowlist
  allowRanges: []                # private/loopback ranges the operator opens, e.g. [10.77.0.0/16]; default none
pools:
  - { image: debian, profile: pydev, size: 4 }
tenants:                         # absent = single tenant, token from AGENTBOX_TOKEN
  - name: alice
    tokenSha256: [${aliceDigest}]         # or tokens: [...] for tests; compared in constant time
    quotas: { sandboxes: 10, memoryMb: 4096, execMinutesPerDay: 600 }
`;

function invalid(text: string): Extract<LoadPolicyResult, { kind: 'invalid' }> {
  const r = parsePolicyText(text, 'policy.yaml');
  assert.equal(r.kind, 'invalid', `expected invalid, got ${JSON.stringify(r)}`);
  return r as Extract<LoadPolicyResult, { kind: 'invalid' }>;
}

describe('parsePolicyText', () => {
  test('the shipped example policy (examples/policy.yaml) loads', () => {
    const path = join(import.meta.dirname, '..', '..', '..', 'examples', 'policy.yaml');
    const r = loadPolicyFile(path);
    assert.equal(r.kind, 'ok', JSON.stringify(r));
    if (r.kind !== 'ok') return;
    assert.equal(r.policy.profiles.pydev?.egress?.mode, 'allowlist');
    assert.equal(r.policy.egress.byteQuotaMb, 1024);
  });

  test('the ARCHITECTURE example loads', () => {
    const r = parsePolicyText(EXAMPLE, 'policy.yaml');
    assert.equal(r.kind, 'ok', JSON.stringify(r));
    if (r.kind !== 'ok') return;
    const p = r.policy;
    assert.equal(p.defaults.limits.memoryMb, 512);
    assert.deepEqual(p.images, ['busybox', 'debian']);
    assert.deepEqual(p.profiles.tiny?.limits, { memoryMb: 64, pids: 64 });
    assert.equal(p.profiles.strong?.isolation, 'gvisor');
    assert.deepEqual(p.egress.presets.pypi, ['pypi.org', 'files.pythonhosted.org']);
    assert.deepEqual(p.pools, [{ image: 'debian', profile: 'pydev', size: 4 }]);
    assert.equal(p.tenants?.[0]?.tokenSha256?.[0], aliceDigest);
    assert.equal(p.tenants?.[0]?.quotas?.execMinutesPerDay, 600);
  });

  test('a minimal file gets the built-in defaults', () => {
    const r = parsePolicyText('version: 1\n', 'p.yaml');
    assert.equal(r.kind, 'ok');
    if (r.kind === 'ok') assert.deepEqual(r.policy, DEFAULT_POLICY);
  });

  test('a partial defaults block keeps the other built-in values', () => {
    const r = parsePolicyText('version: 1\ndefaults:\n  limits: { memoryMb: 128 }\n  idleTimeout: 1s\n', 'p.yaml');
    assert.equal(r.kind, 'ok');
    if (r.kind !== 'ok') return;
    assert.deepEqual(r.policy.defaults.limits, { cpus: 1, memoryMb: 128, pids: 256, diskMb: 1024 });
    assert.equal(r.policy.defaults.idleTimeout, '1s');
    assert.equal(r.policy.defaults.ttl, '1h');
  });

  test('memoryMb: lots points at line 3', () => {
    const r = invalid('version: 1\ndefaults:\n  limits: { memoryMb: lots }\n');
    assert.equal(r.line, 3);
    assert.equal(r.column, 23);
    assert.equal(r.reason, 'defaults.limits.memoryMb: expected a number');
    assert.equal(formatPolicyProblem(r), 'policy.yaml:3: defaults.limits.memoryMb: expected a number');
  });

  test('a YAML syntax error carries its line', () => {
    const r = invalid('version: 1\ndefaults:\n  image: busybox\n  limits: { memoryMb: 64\nimages: [a]\n');
    assert.match(r.reason, /^YAML syntax: /);
    assert.equal(typeof r.line, 'number');
    assert.ok((r.line ?? 0) >= 4, `line ${r.line}`);
    assert.match(formatPolicyProblem(r), /^policy\.yaml:\d+: YAML syntax: /);
  });

  test('a duplicate key is a syntax error on its line', () => {
    const r = invalid('version: 1\ndefaults:\n  image: a\n  image: b\n');
    assert.equal(r.line, 4);
  });

  test('an unknown key is rejected at its own line, with the known keys', () => {
    const r = invalid('version: 1\ndefaults:\n  image: busybox\n  limits:\n    cpus: 1\n    memroyMb: 64\n');
    assert.equal(r.line, 6);
    assert.match(r.reason, /^defaults\.limits: unknown key "memroyMb"/);
    assert.match(r.reason, /memoryMb/);
  });

  test('an unknown top-level key is rejected', () => {
    const r = invalid('version: 1\nprofile:\n  tiny: {}\n');
    assert.equal(r.line, 2);
    assert.match(r.reason, /unknown key "profile"/);
  });

  test('an alias bomb is invalid, not expanded', () => {
    let text = 'a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n';
    for (let i = 1; i < 8; i++) text += `a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(', ')}]\n`;
    assert.equal(invalid(`version: 1\n${text}`).kind, 'invalid');
  });

  test('version must be 1', () => {
    assert.equal(invalid('version: 2\n').line, 1);
    assert.match(invalid('defaults: {}\n').reason, /^version: /);
  });

  test('durations must be strings like 90s', () => {
    const r = invalid('version: 1\nprofiles:\n  a:\n    ttl: 5 minutes\n');
    assert.equal(r.line, 4);
    assert.match(r.reason, /profiles\.a\.ttl: expected a duration like 90s/);
    assert.equal(invalid('version: 1\ndefaults:\n  ttl: 90\n').line, 3);
  });

  test('an empty file and a non-mapping are invalid, not defaults', () => {
    assert.equal(invalid('').line, 1);
    assert.equal(invalid('# only a comment\n').kind, 'invalid');
    assert.match(invalid('- 1\n').reason, /mapping/);
  });

  describe('host patterns', () => {
    for (const [pattern, why] of [
      ['"*"', /every host/],
      ['"*.com"', /public suffix com/],
      ['"*.co.uk"', /public suffix co\.uk/],
      ['"*.github.io"', /public suffix github\.io/],
      ['"foo*.example.com"', /leading label/],
      ['"exa mple.com"', /not a host name/],
      ['"example.com:99999"', /port/],
    ] as const) {
      test(`allow ${pattern} is rejected with a reason`, () => {
        const r = invalid(`version: 1\nprofiles:\n  p:\n    egress:\n      mode: allowlist\n      allow:\n        - ${pattern}\n`);
        assert.equal(r.line, 7);
        assert.match(r.reason, why);
      });
    }

    test('good patterns pass; the deny list may be broad', () => {
      const r = parsePolicyText(
        'version: 1\nprofiles:\n  p:\n    egress: { mode: allowlist, allow: ["*.example.com", "api.github.com:443", "[2001:db8::1]:443", 10.77.0.1] }\negress:\n  globalDeny: ["*.internal"]\n  allowRanges: [10.77.0.0/16, "fd00::/8"]\n',
        'p.yaml',
      );
      assert.equal(r.kind, 'ok', JSON.stringify(r));
    });

    test('a bad preset host points at its line', () => {
      const r = invalid('version: 1\negress:\n  presets:\n    bad: [pypi.org, "*.org"]\n');
      assert.equal(r.line, 4);
      assert.match(r.reason, /^egress\.presets\.bad\[1\]: /);
    });

    test('allowRanges must be CIDRs', () => {
      assert.equal(invalid('version: 1\negress:\n  allowRanges: [10.0.0.0/33]\n').line, 3);
      assert.equal(invalid('version: 1\negress:\n  allowRanges: [example.com]\n').line, 3);
    });
  });

  describe('cross-field checks', () => {
    test('a pool names an unknown profile', () => {
      const r = invalid('version: 1\npools:\n  - image: busybox\n    profile: nope\n    size: 1\n');
      assert.equal(r.line, 4);
      assert.match(r.reason, /pools\[0\]\.profile: unknown profile nope/);
    });

    test('a profile names an unknown preset', () => {
      const r = invalid('version: 1\nprofiles:\n  p:\n    egress:\n      mode: allowlist\n      presets: [pypi, nuget]\negress:\n  presets: { pypi: [pypi.org] }\n');
      assert.equal(r.line, 6);
      assert.match(r.reason, /profiles\.p\.egress\.presets\[1\]: unknown preset nuget \(egress\.presets has: pypi, npm, github, debian, crates, go\)/);
    });

    test('built-in presets need no definition; a policy entry of the same name replaces one', () => {
      const r = parsePolicyText('version: 1\nprofiles:\n  p:\n    egress: { mode: allowlist, presets: [npm, pypi] }\negress:\n  presets: { pypi: [pypi.internal.example] }\n', 'policy.yaml');
      assert.equal(r.kind, 'ok', JSON.stringify(r));
      if (r.kind !== 'ok') return;
      const spec = resolveSpec(r.policy, { profile: 'p' }, { tenant: 'default', id: 'sbx_x' });
      assert.deepEqual(spec.egress, { mode: 'allowlist', allow: ['registry.npmjs.org', 'pypi.internal.example'] });
    });

    test('images outside the allowlist', () => {
      const d = invalid('version: 1\nimages: [debian]\n');
      assert.match(d.reason, /defaults\.image: image busybox is not in images/);
      const p = invalid('version: 1\nimages: [busybox]\nprofiles:\n  p:\n    image: ubuntu\n');
      assert.equal(p.line, 5);
      assert.match(p.reason, /profiles\.p\.image/);
    });

    test('tenant names are unique and each has a token', () => {
      const dup = invalid('version: 1\ntenants:\n  - name: a\n    tokens: [aaaaaaaaaaaaaaaa]\n  - name: a\n    tokens: [bbbbbbbbbbbbbbbb]\n');
      assert.equal(dup.line, 5);
      assert.match(dup.reason, /listed twice/);
      const none = invalid('version: 1\ntenants:\n  - name: a\n    quotas: { sandboxes: 1 }\n');
      assert.equal(none.line, 3);
      assert.match(none.reason, /tenants\[0\]: tenant a has no tokens/);
    });

    test('two tenants may not share a token', () => {
      const r = invalid('version: 1\ntenants:\n  - name: a\n    tokens: [same-token-0123456789]\n  - name: b\n    tokens: [same-token-0123456789]\n');
      assert.match(r.reason, /shares a token/);
    });

    test('tokenSha256 must be 64 hex characters', () => {
      assert.equal(invalid('version: 1\ntenants:\n  - name: a\n    tokenSha256: [abc]\n').line, 4);
    });

    test('a profile isolation its runtime cannot give', () => {
      const r = invalid('version: 1\nprofiles:\n  p: { isolation: gvisor }\n');
      assert.equal(r.line, 3);
      assert.match(r.reason, /runtime local cannot provide gvisor/);
    });

    test('egress mode none with hosts', () => {
      assert.match(invalid('version: 1\nprofiles:\n  p: { egress: { mode: none, allow: [a.com] } }\n').reason, /mode none takes no/);
    });
  });
});

describe('the kubernetes section of the policy', () => {
  test('a kubernetes runtime with its cluster, namespace, RuntimeClasses and images loads', () => {
    const r = parsePolicyText(
      `version: 1
defaults: { runtime: kubernetes, isolation: gvisor }
kubernetes:
  kubeconfig: /etc/agentbox/kubeconfig
  namespace: agentbox-sandboxes
  runtimeClasses: { gvisor: gvisor-prod, vm: kata-qemu }
  images: { busybox: docker.io/library/busybox:1.36 }
`,
      'p.yaml',
    );
    assert.equal(r.kind, 'ok', JSON.stringify(r));
    if (r.kind !== 'ok') return;
    assert.equal(r.policy.defaults.runtime, 'kubernetes');
    assert.equal(r.policy.kubernetes?.namespace, 'agentbox-sandboxes');
    assert.deepEqual(r.policy.kubernetes?.runtimeClasses, { gvisor: 'gvisor-prod', vm: 'kata-qemu' });
  });

  test('kubernetes offers container, gvisor and vm isolation, not namespaces', () => {
    const r = invalid('version: 1\ndefaults: { runtime: kubernetes, isolation: namespaces }\n');
    assert.match(r.reason, /runtime kubernetes cannot provide namespaces isolation \(it offers container, gvisor, vm\)/);
  });

  test('a bad namespace and an unknown key are refused', () => {
    assert.match(invalid('version: 1\nkubernetes: { namespace: Not_A_Namespace }\n').reason, /kubernetes\.namespace: a namespace name/);
    assert.match(invalid('version: 1\nkubernetes: { namespaces: x }\n').reason, /kubernetes/);
    assert.match(invalid('version: 1\nkubernetes: { egressProxy: { podLabels: { app: x } } }\n').reason, /kubernetes/);
  });

  test('kubernetes.agentSandbox is auto, always or never (absent: the driver\'s auto)', () => {
    const r = parsePolicyText('version: 1\nkubernetes: { agentSandbox: always }\n', 'p.yaml');
    assert.equal(r.kind === 'ok' ? r.policy.kubernetes?.agentSandbox : r.kind, 'always');
    const none = parsePolicyText('version: 1\nkubernetes: { namespace: x }\n', 'p.yaml');
    assert.equal(none.kind === 'ok' ? none.policy.kubernetes?.agentSandbox : none.kind, undefined);
    assert.match(invalid('version: 1\nkubernetes: { agentSandbox: sometimes }\n').reason, /kubernetes\.agentSandbox/);
  });
});

describe('loading files', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'agentbox-policy-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('missing and invalid are different results', () => {
    assert.deepEqual(loadPolicyFile(join(dir, 'nope.yaml')), { kind: 'missing', source: join(dir, 'nope.yaml') });
    const bad = join(dir, 'bad.yaml');
    writeFileSync(bad, 'version: 1\ndefaults:\n  limits: { memoryMb: lots }\n');
    const r = loadPolicyFile(bad);
    assert.equal(r.kind, 'invalid');
    assert.equal(formatPolicyProblem(r), `${bad}:3: defaults.limits.memoryMb: expected a number`);
    assert.equal(formatPolicyProblem(loadPolicyFile(join(dir, 'nope.yaml'))), `${join(dir, 'nope.yaml')}: no such file`);
  });

  test('a directory is invalid, not missing', () => {
    assert.equal(loadPolicyFile(dir).kind, 'invalid');
  });

  test('loadPolicy: a missing file gives the defaults', () => {
    const r = loadPolicy({ path: join(dir, 'nope.yaml'), env: {} });
    assert.equal(r.policy, DEFAULT_POLICY);
    assert.equal(r.source, null);
    assert.equal(loadPolicy({ env: {} }).source, null);
  });

  test('loadPolicy: AGENTBOX_POLICY names the file', () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, EXAMPLE);
    const r = loadPolicy({ env: { AGENTBOX_POLICY: file } });
    assert.equal(r.source, file);
    assert.ok('tiny' in r.policy.profiles);
  });

  test('loadPolicy: an invalid file throws with file:line and a hint, never falls back', () => {
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\ndefaults:\n  limits: { memoryMb: lots }\n');
    assert.throws(
      () => loadPolicy({ path: file, env: {} }),
      (err: unknown) =>
        err instanceof AgentboxError &&
        err.code === 'bad_request' &&
        err.message === `${file}:3: defaults.limits.memoryMb: expected a number` &&
        err.hint === `check ${file} line 3`,
    );
  });

  test('strict mode refuses to start without a file', () => {
    const isStrictRefusal = (err: unknown) =>
      err instanceof AgentboxError && err.code === 'bad_request' && /^no policy file/.test(err.message) && (err.hint ?? '').includes('AGENTBOX_REQUIRE_POLICY=1');
    assert.throws(() => loadPolicy({ path: join(dir, 'nope.yaml'), requirePolicy: true, env: {} }), isStrictRefusal);
    assert.throws(() => loadPolicy({ path: join(dir, 'nope.yaml'), env: { AGENTBOX_REQUIRE_POLICY: '1' } }), isStrictRefusal);
    assert.throws(() => loadPolicy({ env: { AGENTBOX_REQUIRE_POLICY: '1' } }), isStrictRefusal);
    const file = join(dir, 'policy.yaml');
    writeFileSync(file, 'version: 1\n');
    assert.equal(loadPolicy({ path: file, requirePolicy: true, env: {} }).source, file);
  });
});

test('DEFAULT_POLICY has the documented values and cannot be changed by accident', () => {
  assert.deepEqual(DEFAULT_POLICY.defaults, {
    runtime: 'local',
    image: 'busybox',
    limits: { cpus: 1, memoryMb: 512, pids: 256, diskMb: 1024 },
    ttl: '1h',
    idleTimeout: '15m',
    execTimeout: '2m',
    outputLimitBytes: 2097152,
  });
  assert.equal(DEFAULT_POLICY.images, undefined);
  assert.deepEqual(DEFAULT_POLICY.profiles, {});
  assert.equal(DEFAULT_POLICY.tenants, undefined);
  assert.ok(Object.isFrozen(DEFAULT_POLICY.defaults.limits));
});
