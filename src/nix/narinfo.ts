import { CairnError } from '../lib/cairn-error.ts';
import { formatNixHash, type NixHash, parseNixHash } from './nix-hash.ts';
import { parseStorePath, storePathBaseNameProblem } from './store-path.ts';

/** A field of a narinfo that Cairn does not know, kept as it was read. */
export interface NarInfoField {
  readonly key: string;
  readonly value: string;
}

/**
 * The contents of a `.narinfo` file. Optional fields are absent when the file lacks their line;
 * `references` is absent without a `References` line and empty for `References: ` (no references).
 */
export interface NarInfo {
  /** The full store path, `/nix/store/<hash>-<name>`. */
  readonly storePath: string;
  /** Where the (compressed) NAR is, relative to the cache root, such as `nar/<hash>.nar.xz`. */
  readonly url: string;
  /** Compression of the file at `url` (`xz`, `zstd`, `none`, ...); Nix assumes `bzip2` when absent. */
  readonly compression?: string;
  /** sha256 of the file at `url`. */
  readonly fileHash?: NixHash;
  /** Size in bytes of the file at `url`. */
  readonly fileSize?: number;
  /** sha256 of the uncompressed NAR. */
  readonly narHash: NixHash;
  /** Size in bytes of the uncompressed NAR; never 0. */
  readonly narSize: number;
  /** Base names (`<hash>-<name>`) of the store paths this path references. */
  readonly references?: readonly string[];
  /** Base name of the derivation that built the path; absent for none (`unknown-deriver`). */
  readonly deriver?: string;
  /** The system the path was built for, such as `x86_64-linux`. */
  readonly system?: string;
  /** Signatures, `<key name>:<base64>`, in file order; their shape is checked by `verifyNarInfo`. */
  readonly sigs: readonly string[];
  /** Content address, such as `fixed:r:sha256:<nix32>` or `text:sha256:<nix32>`. */
  readonly ca?: string;
  /** Fields Cairn does not know, in file order; written back after all known fields. */
  readonly unknownFields: readonly NarInfoField[];
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

const KEY = /^[A-Za-z][A-Za-z0-9-]*$/;
const SIZE = /^(0|[1-9][0-9]*)$/;
const CA = /^(?:text|fixed(?::r)?):(.*)$/;
const REQUIRED = ['StorePath', 'URL', 'NarHash', 'NarSize'] as const;

/** Shortens a value shown in an error message, so that a huge line does not flood the logs. */
function shown(value: string): string {
  return value.length > 200 ? `${value.slice(0, 200)}...` : value;
}

/** What a nested "Cannot <action>: <fault> (<value>)" error says is wrong: its `<fault>`. */
function reason(err: unknown, value: string): string {
  const message = err instanceof Error ? err.message : String(err);
  const fault = message.replace(/^Cannot [^:]*: /, '');
  return fault.endsWith(` (${value})`) ? fault.slice(0, -value.length - 3) : fault;
}

/**
 * Parses a `.narinfo` file strictly: every line is `<Key>: <value>` and ends with a newline
 * (Nix itself rejects a file whose last line lacks one), and every known field is validated.
 * Unknown keys are kept in `unknownFields` rather than rejected, because newer Nix versions may
 * add fields and Nix itself ignores the ones it does not know. Stricter than Nix where Nix
 * never writes the input: duplicate fields other than `Sig` (Nix merges or overwrites them),
 * numbers with leading zeros, hashes other than sha256 (Nix cannot write those back), and
 * duplicate references or signatures (Nix keeps them in sets) are rejected.
 * @throws CairnError INVALID_NARINFO naming the line and what is wrong.
 */
export function parseNarInfo(text: string): NarInfo {
  const info: Partial<Mutable<NarInfo>> & { sigs: string[]; unknownFields: NarInfoField[] } = {
    sigs: [],
    unknownFields: [],
  };
  const seen = new Map<string, number>();
  // A Set, not sigs.includes: a hostile file of many Sig lines must not cost quadratic time.
  const sigs = new Set<string>();
  const lines = text.split('\n');
  const last = lines.pop();
  if (last !== '') {
    throw invalid(`line ${lines.length + 1}: the last line does not end with a newline`, last ?? '');
  }
  lines.forEach((line, i) => {
    const n = i + 1;
    const fail = (what: string, value = line) => invalid(`line ${n}: ${what}`, value);
    if (line === '') throw fail('empty line');
    const control = /\p{Cc}/u.exec(line);
    if (control) {
      const code = control[0].charCodeAt(0).toString(16).padStart(4, '0').toUpperCase();
      throw fail(`control character U+${code} in line`, quote(line));
    }
    const sep = line.indexOf(': ');
    const key = sep < 0 ? '' : line.slice(0, sep);
    if (!KEY.test(key)) throw fail("expected '<Key>: <value>'");
    const value = line.slice(sep + 2);
    // Object.hasOwn: a key such as `constructor` must not find Object.prototype's members.
    const parser = Object.hasOwn(FIELDS, key) ? FIELDS[key] : undefined;
    if (key === 'Sig') {
      if (value === '') throw fail('Sig is empty');
      if (sigs.has(value)) throw fail('duplicate signature');
      sigs.add(value);
      info.sigs.push(value);
    } else if (parser !== undefined) {
      const first = seen.get(key);
      if (first !== undefined) throw fail(`duplicate ${key} field (first on line ${first})`);
      seen.set(key, n);
      if (value === '' && key !== 'References') throw fail(`${key} is empty`);
      parser(info, value, fail);
    } else {
      info.unknownFields.push({ key, value });
    }
  });
  const missing = REQUIRED.filter((key) => !seen.has(key));
  if (missing.length > 0) {
    throw invalid(
      `missing required field${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`,
      info.storePath ?? 'no StorePath',
    );
  }
  return info as NarInfo;
}

type Fail = (what: string, value?: string) => CairnError;
type FieldParser = (info: Partial<Mutable<NarInfo>>, value: string, fail: Fail) => void;

const FIELDS: Partial<Record<string, FieldParser>> = {
  StorePath(info, value, fail) {
    try {
      info.storePath = parseStorePath(value).path;
    } catch (err) {
      throw fail(`StorePath is not a valid store path: ${reason(err, value)}`, value);
    }
  },
  URL(info, value) {
    info.url = value;
  },
  Compression(info, value) {
    info.compression = value;
  },
  FileHash(info, value, fail) {
    info.fileHash = sha256('FileHash', value, fail);
  },
  FileSize(info, value, fail) {
    info.fileSize = size('FileSize', value, fail);
  },
  NarHash(info, value, fail) {
    info.narHash = sha256('NarHash', value, fail);
  },
  NarSize(info, value, fail) {
    // Nix rejects a narinfo with NarSize 0 as corrupt; no NAR is empty.
    if (value === '0') throw fail('NarSize must not be 0', `NarSize: ${value}`);
    info.narSize = size('NarSize', value, fail);
  },
  References(info, value, fail) {
    const refs = value === '' ? [] : value.split(' ');
    // A Set, not refs.indexOf: a 4 MiB References line (100,000 refs) would take minutes otherwise.
    const unique = new Set<string>();
    refs.forEach((ref, i) => {
      const problem = storePathBaseNameProblem(ref);
      if (problem !== undefined)
        throw fail(`reference ${i + 1} is not a valid store path base name: ${problem}`, ref);
      if (unique.has(ref)) throw fail(`reference ${i + 1} is a duplicate`, ref);
      unique.add(ref);
    });
    info.references = refs;
  },
  Deriver(info, value, fail) {
    if (value === 'unknown-deriver') return;
    const problem = storePathBaseNameProblem(value);
    if (problem !== undefined) throw fail(`Deriver is not a valid store path base name: ${problem}`, value);
    if (!value.endsWith('.drv')) throw fail('Deriver does not end in .drv', value);
    info.deriver = value;
  },
  System(info, value) {
    info.system = value;
  },
  CA(info, value, fail) {
    const m = CA.exec(value);
    if (!m) throw fail("CA is not 'text:<hash>', 'fixed:<hash>' or 'fixed:r:<hash>'", value);
    const hash = m[1] ?? '';
    try {
      parseNixHash(hash);
    } catch (err) {
      throw fail(`CA has an invalid hash: ${reason(err, hash)}`, value);
    }
    info.ca = value;
  },
};

function sha256(key: string, value: string, fail: Fail): NixHash {
  let hash: NixHash;
  try {
    hash = parseNixHash(value);
  } catch (err) {
    throw fail(`${key} is not a valid hash: ${reason(err, value)}`, value);
  }
  if (hash.algorithm !== 'sha256') throw fail(`${key} is not a sha256 hash`, value);
  return hash;
}

function size(key: string, value: string, fail: Fail): number {
  const n = Number(value);
  if (!SIZE.test(value) || !Number.isSafeInteger(n)) {
    throw fail(`${key} is not a non-negative integer`, `${key}: ${shown(value)}`);
  }
  return n;
}

function invalid(what: string, value: string): CairnError {
  // Quoted when it holds a control character (as the unterminated last line may), so that a
  // message cannot carry a line break or a terminal escape into logs and error bodies.
  const quoted = /\p{Cc}/u.test(value) ? quote(value) : value;
  return new CairnError('INVALID_NARINFO', `Cannot parse narinfo: ${what} (${shown(quoted)})`);
}

/** JSON-quotes a value, escaping DEL and the C1 controls too, which JSON.stringify leaves as they are. */
function quote(value: string): string {
  return JSON.stringify(value).replace(
    /\p{Cc}/gu,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  );
}

/**
 * Writes a narinfo as Nix does: fields in Nix's order, hashes as `sha256:<nix32>`, one `Sig`
 * line per signature, then any unknown fields. `parseNarInfo(serializeNarInfo(x))` equals `x`.
 * @throws CairnError INVALID_NARINFO when a value contains a line break or other control character.
 */
export function serializeNarInfo(info: NarInfo): string {
  let out = '';
  const line = (key: string, value: string | number | NixHash | undefined) => {
    if (value === undefined) return;
    const text = typeof value === 'object' ? formatNixHash(value) : String(value);
    if (/\p{Cc}/u.test(text)) {
      throw new CairnError(
        'INVALID_NARINFO',
        `Cannot serialize narinfo: ${key} contains a control character (${JSON.stringify(text)})`,
      );
    }
    out += `${key}: ${text}\n`;
  };
  line('StorePath', info.storePath);
  line('URL', info.url);
  line('Compression', info.compression);
  line('FileHash', info.fileHash);
  line('FileSize', info.fileSize);
  line('NarHash', info.narHash);
  line('NarSize', info.narSize);
  line('References', info.references?.join(' '));
  line('Deriver', info.deriver);
  line('System', info.system);
  for (const sig of info.sigs) line('Sig', sig);
  line('CA', info.ca);
  for (const field of info.unknownFields) line(field.key, field.value);
  return out;
}
