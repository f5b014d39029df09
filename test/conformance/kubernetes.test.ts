/**
 * The runtime contract on the kubernetes driver, run against the FAKE API server
 * (test/kubernetes/fake-apiserver.ts): the driver speaks the real API and pods/exec protocols, and the
 * fake backs each pod with a sandbox of the real local runtime. No real cluster runs on this machine;
 * what a real one does differently is listed in the driver's and the fake's comments.
 *
 * AGENTBOX_TEST_K8S_AGENT_SANDBOX=v1beta1 (or v1alpha1) runs the same contract through
 * kubernetes-sigs/agent-sandbox: the fake serves the Sandbox CRD in that version with its fake
 * controller, and the driver runs with agentSandbox: always, so every sandbox is a Sandbox object.
 */
import assert from 'node:assert/strict';
import { after } from 'node:test';
import { hasDebian } from '../helpers/images.js';
import { hostLeftovers } from '../helpers/host-leftovers.js';
import { startFakeCluster } from '../kubernetes/fake-cluster.js';
import { runRuntimeContract } from './contract.js';

const agentSandbox = process.env.AGENTBOX_TEST_K8S_AGENT_SANDBOX ?? '';
if (agentSandbox && !['v1beta1', 'v1alpha1'].includes(agentSandbox)) throw new Error(`AGENTBOX_TEST_K8S_AGENT_SANDBOX is v1beta1, v1alpha1 or empty, not ${agentSandbox}`);
const cluster = await startFakeCluster(agentSandbox ? { crds: true, sandboxVersions: [agentSandbox] } : {});

runRuntimeContract({
  name: `kubernetes (the fake API server over the local runtime${agentSandbox ? `, as agent-sandbox ${agentSandbox} Sandboxes` : ''})`,
  isolation: 'container',
  debian: hasDebian(),
  newRuntime: async () => cluster.newRuntime(agentSandbox ? { agentSandbox: 'always' } : {}),
  skip: [
    {
      reason: "a kubernetes sandbox's disk is an emptyDir on its node: the driver cannot start one from a copy of another's disk (that needs VolumeSnapshots of a PVC, not built)",
      tests: ["starts from a frozen clone of a live sandbox's disk: the same bytes, owned by the new sandbox, independent both ways"],
    },
    {
      reason: 'named volumes are host directories: a pod would need a PersistentVolumeClaim, which the kubernetes driver does not make (create refuses volumes)',
      tests: ['a volume mounted rw in two sandboxes is shared; ro mount refuses writes (EROFS); survives the sandbox'],
    },
  ],
});

after(async () => {
  const pods = cluster.fake.listPods();
  const policies = cluster.fake.listPolicies();
  const sandboxes = cluster.fake.listSandboxes();
  const locals = cluster.fake.localSandboxIds();
  const ever = [...cluster.fake.localIdsEver];
  await cluster.close();
  assert.deepEqual(pods.map((p) => p.metadata.name), [], 'pods left behind in the fake API server');
  assert.deepEqual(policies.map((p) => p.metadata.name), [], 'network policies left behind');
  assert.deepEqual(sandboxes.map((p) => p.metadata.name), [], 'agent-sandbox Sandbox objects left behind');
  assert.deepEqual(locals, [], 'local sandboxes of the fake left behind');
  assert.deepEqual(hostLeftovers(ever), [], 'processes, cgroups or mounts of the fake\'s local sandboxes left on the host');
});
