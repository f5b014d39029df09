/** Every attack of the shipped suite, in the order they run. */
import { apiAttacks } from './api.js';
import { crossSandboxAttacks } from './cross-sandbox.js';
import { filesystemAttacks } from './filesystem.js';
import { networkAttacks } from './network.js';
import { privilegeAttacks } from './privilege.js';
import { resourceAttacks } from './resources.js';
import { supplyChainAttacks } from './supply-chain.js';
import type { Attack } from './types.js';

export const allAttacks: readonly Attack[] = [
  ...filesystemAttacks,
  ...privilegeAttacks,
  ...crossSandboxAttacks,
  ...networkAttacks,
  ...apiAttacks,
  ...supplyChainAttacks,
  ...resourceAttacks,
];
