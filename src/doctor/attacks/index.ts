/** Every attack of the shipped suite, in the order they run. */
import { apiAttacks } from './api.js';
import { networkAttacks } from './network.js';
import { supplyChainAttacks } from './supply-chain.js';
import type { Attack } from './types.js';

export const allAttacks: readonly Attack[] = [...networkAttacks, ...apiAttacks, ...supplyChainAttacks];
