import { CairnError } from '../../lib/cairn-error.ts';
import { NAR_COMPRESSIONS, type NarCompression } from './decompressor.ts';

/** `nar/<52 nix32 chars>.nar[.xz|.zst|.bz2]`: the file name is the sha256 of the file. */
export const NAR_FILE = /^([0-9abcdfghijklmnpqrsvwxyz]{52})\.nar(\.xz|\.zst|\.bz2|\.br|\.lz4|\.lzip|\.gz)?$/;

/** Parses a NAR file name; throws a 400 that says what is wrong. */
export function parseNarFileName(fileName: string): { fileHash: string; compression: NarCompression } {
  const m = NAR_FILE.exec(fileName);
  if (!m) {
    throw new CairnError(
      'BAD_REQUEST',
      `Cannot use NAR file name: expected <52 nix32 characters>.nar, .nar.xz, .nar.zst or .nar.bz2 (${fileName.slice(0, 120)})`,
    );
  }
  const ext = `.nar${m[2] ?? ''}`;
  const compression = (Object.keys(NAR_COMPRESSIONS) as NarCompression[]).find(
    (c) => NAR_COMPRESSIONS[c] === ext,
  );
  if (!compression) {
    throw new CairnError(
      'UNSUPPORTED_COMPRESSION',
      `Cannot upload NAR: compression ${ext} is not accepted; use none, xz, zstd or bzip2 (${fileName})`,
    );
  }
  return { fileHash: `sha256:${m[1]}`, compression };
}
