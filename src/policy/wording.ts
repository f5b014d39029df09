/** `profile "tiny" allows` but `the defaults allow`: hints are read by people. */
export const DEFAULTS_WHO = 'the defaults';

export function says(who: string, verb: string): string {
  return `${who} ${verb}${who === DEFAULTS_WHO ? '' : 's'}`;
}
