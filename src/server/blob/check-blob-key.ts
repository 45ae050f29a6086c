import { CairnError } from '../../lib/cairn-error.ts';

/** Slash-separated segments of safe characters; `!` and `:` appear in Nix realisation names. */
const KEY_PATTERN = /^(?:[A-Za-z0-9][A-Za-z0-9._+=!:-]*\/)*[A-Za-z0-9][A-Za-z0-9._+=!:-]*$/;

/**
 * Checks a blob key again where it is used, whatever the caller checked: every store maps keys
 * to paths or object names, and none may step outside its root.
 * @throws CairnError INVALID_ARGUMENT naming the key.
 */
export function checkBlobKey(key: string): string {
  if (!KEY_PATTERN.test(key) || key.split('/').some((s) => s === '.' || s === '..')) {
    throw new CairnError('INVALID_ARGUMENT', `Cannot use blob key: unsafe characters or segments (${key})`);
  }
  return key;
}
