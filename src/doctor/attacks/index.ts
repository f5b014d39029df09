/** Every attack of the shipped suite, in the order they run. */
import { networkAttacks } from './network.js';
import type { Attack } from './types.js';

export const allAttacks: readonly Attack[] = [...networkAttacks];
