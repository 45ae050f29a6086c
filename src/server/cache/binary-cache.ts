import { CairnError } from '../../lib/cairn-error.ts';
import { type NarInfo, parseNarInfo, serializeNarInfo } from '../../nix/narinfo.ts';
import { formatNixHash } from '../../nix/nix-hash.ts';
import { parseSecretKey, type SecretKey } from '../../nix/signing-key.ts';
import { parseStorePathBaseName } from '../../nix/store-path.ts';
import type { BlobRead, BlobStore } from '../blob/blob-store.ts';
import type { CacheGcRepository } from '../db/cache-gc-repository.ts';
import type { CacheRepository, CacheRow } from '../db/cache-repository.ts';
import { PathIndex } from '../db/path-index.ts';
import { type CacheSigners, cacheSignatures, resignNarInfo } from './cache-signatures.ts';
import { NAR_FILE, parseNarFileName } from './parse-nar-file-name.ts';
import { receiveNar } from './receive-nar.ts';

/**
 * Names of opaque files under `log/`, `realisations/` and `debuginfo/`. Realisations are named
 * `<hash algo>:<hex>!<output>.doi` by Nix, hence `:` and `!`.
 */
const OPAQUE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+=!:-]{0,250}$/;
/** Bytes of narinfo text kept in memory; a narinfo is about 500 bytes, so some 130,000 of them. */
const NARINFO_CACHE_BYTES = 64 * 1024 * 1024;
/** Top-level folders of a cache whose files are kept as uploaded. */
export const OPAQUE_FOLDERS = ['log', 'realisations', 'debuginfo'] as const;

/** A cache with its parsed signing keys. */
export interface ResolvedCache extends CacheRow, CacheSigners {
  /** The newest active key, the one `public_key` names. */
  readonly key: SecretKey;
}

/**
 * The binary cache: stores NAR files and narinfos, checking every upload against what it
 * claims, and signing what it publishes. HTTP concerns live in `cache-handler.ts`.
 */
export class BinaryCache {
  readonly #caches: CacheRepository;
  readonly #index: PathIndex;
  readonly #blobs: BlobStore;
  readonly #now: () => number;
  readonly #maxNarBytes: number;
  readonly #resolved = new Map<string, ResolvedCache>();
  readonly #locks: Pick<CacheGcRepository, 'withCacheLock'>;
  /**
   * Published narinfos by `<cache id>/<hash part>`, as served (signed by the cache's active keys),
   * oldest first. A miss is never remembered: a path published through another replica is read
   * from the database on the next request. A key rotation or retirement changes what is served:
   * it rings the `cache-keys` doorbell, and every replica {@link forget}s the cache. The collector
   * removes narinfos: it forgets them here and rings a doorbell so that every replica forgets the
   * cache's narinfos ({@link forgetCache}).
   */
  readonly #narinfos = new Map<string, string>();
  #narinfoBytes = 0;
  /**
   * Counts forgetting: a narinfo read from the database is remembered only if nothing was
   * forgotten while it was read, so a read racing a removal never puts a removed path back.
   */
  #forgotten = 0;
  /** NAR files asked for, with when, by cache id: a collection spares those read since it began. */
  readonly #narReads = new Map<number, Map<string, number>>();
  /** Hash parts fetched since the last {@link flushTouches}, with when, by cache id. */
  #touched = new Map<number, Map<string, number>>();
  /** Reads of narinfos and NAR files from the database under way, by cache id ({@link whileNotRead}). */
  readonly #reading = new Map<number, { count: number; drained: Array<() => void> }>();
  /** A removal by the collector under way, by cache id: reads from the database wait for it. */
  readonly #removing = new Map<number, Promise<void>>();

  constructor(deps: {
    caches: CacheRepository;
    index: PathIndex;
    blobs: BlobStore;
    now: () => number;
    maxNarBytes: number;
    /** The cache locks that keep uploads and the collector apart. */
    locks: Pick<CacheGcRepository, 'withCacheLock'>;
  }) {
    this.#locks = deps.locks;
    this.#caches = deps.caches;
    this.#index = deps.index;
    this.#blobs = deps.blobs;
    this.#now = deps.now;
    this.#maxNarBytes = deps.maxNarBytes;
  }

  /**
   * The cache of that name, or undefined. Caches are never renamed or deleted, so a hit is
   * remembered until its keys change ({@link forget}); a miss is not, so a cache created through
   * another replica is found at once.
   */
  async resolve(name: string): Promise<ResolvedCache | undefined> {
    const hit = this.#resolved.get(name);
    if (hit) return hit;
    const row = await this.#caches.byName(name);
    if (!row) return undefined;
    const rows = await this.#caches.keys(row.id);
    const keys = rows.filter((k) => k.retired_at === null).map((k) => parseSecretKey(k.secret_key));
    const resolved = {
      ...row,
      key: parseSecretKey(row.secret_key),
      keys,
      keyNames: new Set(rows.map((k) => k.name)),
    };
    this.#resolved.set(name, resolved);
    return resolved;
  }

  /**
   * Forgets what is held in memory of the cache (its keys, its narinfos as served): its signing
   * keys changed, here or on another replica.
   */
  forget(name: string): void {
    const cache = this.#resolved.get(name);
    if (!cache) return;
    this.#resolved.delete(name);
    const prefix = `${cache.id}/`;
    for (const [k, v] of this.#narinfos) {
      if (!k.startsWith(prefix)) continue;
      this.#narinfos.delete(k);
      this.#narinfoBytes -= v.length;
    }
  }

  /**
   * Forgets the caches whose active keys are not those held in memory: after a re-sync, when a
   * doorbell may have been lost.
   */
  async revalidate(): Promise<void> {
    for (const [name, cache] of [...this.#resolved]) {
      const active = (await this.#caches.keys(cache.id)).filter((k) => k.retired_at === null);
      const same =
        active.length === cache.keys.length && active.every((k, i) => k.name === cache.keys[i]?.name);
      if (!same) this.forget(name);
    }
  }

  /** The narinfo served for a hash part, or undefined. */
  async narinfo(cache: ResolvedCache, hashPart: string): Promise<string | undefined> {
    const key = `${cache.id}/${hashPart}`;
    const hit = this.#narinfos.get(key);
    if (hit !== undefined) {
      this.touch(cache, hashPart);
      return hit;
    }
    const forgotten = this.#forgotten;
    const stored = await this.#read(cache.id, async () => {
      const found = await this.#index.narinfo(cache.id, hashPart);
      if (found !== undefined) this.touch(cache, hashPart);
      return found;
    });
    if (stored === undefined) return undefined;
    const text = resignNarInfo(stored, cache);
    // Not when the keys changed meanwhile (the next request signs with the new ones), nor when
    // the collector forgot narinfos meanwhile (this one may be among them).
    if (this.#resolved.get(cache.name) === cache && forgotten === this.#forgotten) this.#remember(key, text);
    return text;
  }

  /**
   * Notes that a path was fetched: the collector keeps what was fetched within a cache's
   * retention. Written to the database in batches ({@link flushTouches}), not per request.
   */
  touch(cache: CacheRow, hashPart: string): void {
    const set = this.#touched.get(cache.id);
    // The second it was fetched in (the first fetch since the last flush counts).
    const at = Math.floor(this.#now() / 1000) * 1000;
    if (!set) this.#touched.set(cache.id, new Map([[hashPart, at]]));
    else if (!set.has(hashPart)) set.set(hashPart, at);
  }

  /** Hash parts of the cache fetched since the last flush. */
  touchedHashParts(cacheId: number): Iterable<string> {
    return this.#touched.get(cacheId)?.keys() ?? [];
  }

  /** Writes the fetches noted so far as the paths' last access. */
  async flushTouches(): Promise<void> {
    // NAR reads matter to a collection running now only: keep the last 15 minutes of them.
    const old = this.#now() - 15 * 60_000;
    for (const reads of this.#narReads.values()) {
      for (const [name, at] of reads) if (at < old) reads.delete(name);
    }
    const touched = this.#touched;
    if (touched.size === 0) return;
    this.#touched = new Map();
    for (const [cacheId, fetched] of touched) {
      const bySecond = new Map<number, string[]>();
      for (const [hashPart, at] of fetched) {
        const list = bySecond.get(at);
        if (list) list.push(hashPart);
        else bySecond.set(at, [hashPart]);
      }
      await this.#index.touchMany(cacheId, [...bySecond]);
    }
  }

  /** Forgets narinfos the collector removed. */
  forgetNarinfos(cacheId: number, hashParts: readonly string[]): void {
    this.#forgotten++;
    for (const h of hashParts) {
      const key = `${cacheId}/${h}`;
      const text = this.#narinfos.get(key);
      if (text === undefined) continue;
      this.#narinfos.delete(key);
      this.#narinfoBytes -= text.length;
    }
  }

  /** Forgets every narinfo of a cache (another replica removed some), or of every cache. */
  forgetCache(cacheId?: number): void {
    this.#forgotten++;
    const prefix = `${cacheId}/`;
    for (const [key, text] of this.#narinfos) {
      if (cacheId !== undefined && !key.startsWith(prefix)) continue;
      this.#narinfos.delete(key);
      this.#narinfoBytes -= text.length;
    }
  }

  /** Deletes NAR files' blobs (the collector, holding the cache's lock). */
  async deleteNarBlobs(cache: CacheRow, fileNames: readonly string[]): Promise<void> {
    // Several at once: the lock is held meanwhile, and on SQLite so is the one connection.
    let next = 0;
    const worker = async () => {
      while (next < fileNames.length) await this.#blobs.delete(narKey(cache, fileNames[next++] as string));
    };
    await Promise.all(Array.from({ length: Math.min(16, fileNames.length) }, worker));
  }

  /** The cache of that name if it was resolved before: no promise, for the hot path. */
  resolvedInMemory(name: string): ResolvedCache | undefined {
    return this.#resolved.get(name);
  }

  /** The narinfo if it is in memory: no promise, for the hot path. */
  narinfoInMemory(cache: ResolvedCache, hashPart: string): string | undefined {
    const text = this.#narinfos.get(`${cache.id}/${hashPart}`);
    if (text !== undefined) this.touch(cache, hashPart);
    return text;
  }

  #remember(key: string, text: string): void {
    this.#narinfos.set(key, text);
    this.#narinfoBytes += text.length;
    for (const [k, v] of this.#narinfos) {
      if (this.#narinfoBytes <= NARINFO_CACHE_BYTES) break;
      this.#narinfos.delete(k);
      this.#narinfoBytes -= v.length;
    }
  }

  /** Size of an uploaded NAR file, or undefined when the cache does not hold it. */
  async narFileSize(cache: ResolvedCache, fileName: string): Promise<number | undefined> {
    // Every HEAD and GET of a NAR comes here. Nix HEADs a NAR before uploading it and skips the
    // upload when it exists: a collection running then must not remove it under the narinfo
    // that follows (see narFilesReadSince).
    return await this.#read(cache.id, async () => {
      const size = (await this.#index.narFile(cache.id, fileName))?.file_size;
      if (size !== undefined) {
        const reads = this.#narReads.get(cache.id);
        if (reads) reads.set(fileName, this.#now());
        else this.#narReads.set(cache.id, new Map([[fileName, this.#now()]]));
      }
      return size;
    });
  }

  /**
   * Runs a read of the cache's narinfos or NAR files from the database, noting what it found
   * inside `fn`, never while a removal ({@link whileNotRead}) is under way.
   */
  async #read<T>(cacheId: number, fn: () => Promise<T>): Promise<T> {
    for (let removal = this.#removing.get(cacheId); removal; removal = this.#removing.get(cacheId)) {
      await removal;
    }
    let reading = this.#reading.get(cacheId);
    if (!reading) {
      reading = { count: 0, drained: [] };
      this.#reading.set(cacheId, reading);
    }
    reading.count++;
    try {
      return await fn();
    } finally {
      reading.count--;
      if (reading.count === 0) {
        this.#reading.delete(cacheId);
        for (const wake of reading.drained.splice(0)) wake();
      }
    }
  }

  /**
   * Runs one batch of the collector's removals once the reads of the cache from the database under
   * way have ended (and noted what they served), holding new ones until it ends. On PostgreSQL a
   * read takes no lock: without this, a narinfo read just before a batch's commit would be served
   * and noted only after the batch had checked what was used, and the path removed under a
   * client that was just told it exists. (A read served by another replica is not seen: its
   * fetches reach the database within 30 seconds.)
   */
  async whileNotRead<T>(cacheId: number, fn: () => Promise<T>): Promise<T> {
    for (let other = this.#removing.get(cacheId); other; other = this.#removing.get(cacheId)) await other;
    let release = () => {};
    this.#removing.set(cacheId, new Promise<void>((resolve) => (release = resolve)));
    try {
      const reading = this.#reading.get(cacheId);
      if (reading) await new Promise<void>((resolve) => reading.drained.push(resolve));
      return await fn();
    } finally {
      this.#removing.delete(cacheId);
      release();
    }
  }

  /** NAR files of the cache asked for (HEAD or GET) from `since` on, as far as this server knows. */
  narFilesReadSince(cacheId: number, since: number): Set<string> {
    const out = new Set<string>();
    for (const [name, at] of this.#narReads.get(cacheId) ?? []) if (at >= since) out.add(name);
    return out;
  }

  /** Opens an uploaded NAR file, or a range of it. */
  async readNar(
    cache: ResolvedCache,
    fileName: string,
    range?: { start: number; end: number },
  ): Promise<BlobRead | undefined> {
    return await this.#blobs.read(narKey(cache, fileName), range);
  }

  /** A presigned URL of the NAR file valid a few minutes, when the store answers downloads so. */
  narDownloadUrl(cache: ResolvedCache, fileName: string): Promise<string> | undefined {
    return this.#blobs.downloadUrl?.(narKey(cache, fileName));
  }

  /**
   * Receives a NAR file: it must hash to its name and decompress to a well-formed NAR. It is
   * indexed (so that a narinfo naming it can be published) only once it is stored in full; a
   * bad or interrupted upload leaves nothing behind.
   */
  async uploadNar(cache: ResolvedCache, fileName: string, body: AsyncIterable<Uint8Array>): Promise<void> {
    const { fileHash, compression } = parseNarFileName(fileName);
    const writer = await this.#blobs.createWriter(narKey(cache, fileName));
    const got = await receiveNar(body, writer, { compression, maxBytes: this.#maxNarBytes });
    if (got.fileHash !== fileHash) {
      await writer.abort();
      throw new CairnError(
        'UPLOAD_MISMATCH',
        `Cannot upload NAR: the file's sha256 is ${got.fileHash}, but its name says ${fileHash} (${fileName})`,
      );
    }
    // Visible and recorded under the cache's lock: the collector, removing this file's blob
    // under the same lock, cannot remove it between the two.
    await this.#locks.withCacheLock(cache.id, 'shared', async (trx) => {
      await writer.commit();
      await new PathIndex(trx).putNarFile({
        cache_id: cache.id,
        file_name: fileName,
        compression,
        file_hash: got.fileHash,
        file_size: got.fileSize,
        nar_hash: got.narHash,
        nar_size: got.narSize,
        created_at: this.#now(),
      });
    });
  }

  /**
   * Publishes a narinfo: checks it against the NAR file it names and the references the cache
   * holds, adds the cache's signature, and stores it. A narinfo that fails removes the NAR file
   * it named (when no published path uses it), so a bad upload leaves nothing behind.
   */
  async putNarinfo(
    cache: ResolvedCache,
    hashPart: string,
    text: string,
  ): Promise<{ created: boolean; storePath: string }> {
    try {
      // Checked and published under the cache's lock: the collector cannot remove the NAR file
      // or a reference between the check and the insert.
      return await this.#locks.withCacheLock(cache.id, 'shared', (trx) =>
        this.#putNarinfo(new PathIndex(trx), cache, hashPart, text),
      );
    } catch (err) {
      // The NAR it named was uploaded for this narinfo alone: do not keep it.
      const url = /^URL: nar\/(\S+)$/m.exec(text)?.[1];
      if (url !== undefined && NAR_FILE.test(url)) await this.#dropNarFile(cache, url);
      throw err;
    }
  }

  async #putNarinfo(
    index: PathIndex,
    cache: ResolvedCache,
    hashPart: string,
    text: string,
  ): Promise<{ created: boolean; storePath: string }> {
    const info = parseNarInfo(text);
    const path = parseStorePathBaseName(info.storePath.slice('/nix/store/'.length));
    if (path.hashPart !== hashPart) {
      throw new CairnError(
        'UPLOAD_MISMATCH',
        `Cannot publish narinfo: its StorePath does not match the file name ${hashPart}.narinfo (${info.storePath})`,
      );
    }
    if (info.compression === undefined) {
      throw new CairnError(
        'BAD_REQUEST',
        `Cannot publish narinfo: it has no Compression line, which Nix would read as bzip2 (${info.storePath})`,
      );
    }
    if (info.references === undefined) {
      throw new CairnError(
        'BAD_REQUEST',
        `Cannot publish narinfo: it has no References line, which would publish the path without its dependencies (${info.storePath})`,
      );
    }
    if (!info.url.startsWith('nar/')) {
      throw new CairnError(
        'BAD_REQUEST',
        `Cannot publish narinfo: URL must name a file under nar/ (${info.url})`,
      );
    }
    const fileName = info.url.slice('nar/'.length);
    const named = parseNarFileName(fileName);
    if (named.compression !== info.compression) {
      throw new CairnError(
        'UPLOAD_MISMATCH',
        `Cannot publish narinfo: Compression is ${info.compression} but the URL names a ${named.compression} file (${info.url})`,
      );
    }
    const existing = await index.storePath(cache.id, hashPart);
    if (existing) {
      if (existing.nar_hash !== formatNixHash(info.narHash)) {
        throw new CairnError(
          'ALREADY_EXISTS',
          `Cannot publish narinfo: the cache already holds ${info.storePath} with another NarHash (${existing.nar_hash})`,
        );
      }
      // Pushed again: a use, which keeps it from a collection running now (it checks under the
      // lock this holds) and for the retention to come.
      await index.touch(cache.id, [hashPart], this.#now());
      return { created: false, storePath: info.storePath };
    }
    const nar = await index.narFile(cache.id, fileName);
    if (!nar) {
      throw new CairnError(
        'UPLOAD_INCOMPLETE',
        `Cannot publish narinfo: the cache holds no NAR file ${info.url}; upload it first (${info.storePath})`,
      );
    }
    checkAgainstNar(info, nar);
    await checkReferences(index, cache, info, hashPart);
    const signed: NarInfo = { ...info, sigs: cacheSignatures(info, cache) };
    const now = this.#now();
    const created = await index.insertStorePath({
      cache_id: cache.id,
      hash_part: hashPart,
      store_path: info.storePath,
      nar_hash: nar.nar_hash,
      nar_size: nar.nar_size,
      file_name: fileName,
      file_hash: nar.file_hash,
      file_size: nar.file_size,
      compression: info.compression,
      refs: info.references.join(' '),
      deriver: info.deriver ?? null,
      system: info.system ?? null,
      ca: info.ca ?? null,
      narinfo: serializeNarInfo(signed),
      uploaded_at: now,
      last_accessed_at: now,
    });
    return { created, storePath: info.storePath };
  }

  async #dropNarFile(cache: ResolvedCache, fileName: string): Promise<void> {
    await this.#locks.withCacheLock(cache.id, 'exclusive', async (trx) => {
      const index = new PathIndex(trx);
      if (await index.narFileInUse(cache.id, fileName)) return;
      await this.#blobs.delete(narKey(cache, fileName));
      await index.deleteNarFile(cache.id, fileName);
    });
  }

  /** Stores an opaque file (`log/`, `realisations/`, `debuginfo/`) as uploaded. */
  async putOpaque(
    cache: ResolvedCache,
    folder: string,
    name: string,
    body: AsyncIterable<Uint8Array>,
  ): Promise<void> {
    checkOpaqueName(name);
    const writer = await this.#blobs.createWriter(`caches/${cache.id}/${folder}/${name}`);
    let size = 0;
    try {
      for await (const chunk of body) {
        size += chunk.length;
        if (size > 64 * 1024 * 1024) {
          throw new CairnError('TOO_LARGE', `Cannot upload ${folder}/${name}: larger than 64 MiB`);
        }
        await writer.write(chunk);
      }
    } catch (err) {
      await writer.abort();
      throw err;
    }
    await writer.commit();
  }

  /** Opens an opaque file, or undefined. */
  async readOpaque(cache: ResolvedCache, folder: string, name: string): Promise<BlobRead | undefined> {
    checkOpaqueName(name);
    return await this.#blobs.read(`caches/${cache.id}/${folder}/${name}`);
  }
}

function narKey(cache: CacheRow, fileName: string): string {
  return `caches/${cache.id}/nar/${fileName}`;
}

function checkOpaqueName(name: string): void {
  if (!OPAQUE_NAME.test(name) || name === '.' || name === '..') {
    throw new CairnError('BAD_REQUEST', `Cannot use file name: unsafe characters (${name.slice(0, 120)})`);
  }
}

function checkAgainstNar(
  info: NarInfo,
  nar: { file_hash: string; file_size: number; nar_hash: string; nar_size: number },
): void {
  const mismatch = (what: string, said: string | number, got: string | number) =>
    new CairnError(
      'UPLOAD_MISMATCH',
      `Cannot publish narinfo: ${what} is ${said}, but the uploaded NAR file has ${got} (${info.storePath})`,
    );
  const narHash = formatNixHash(info.narHash);
  if (narHash !== nar.nar_hash) throw mismatch('NarHash', narHash, nar.nar_hash);
  if (info.narSize !== nar.nar_size) throw mismatch('NarSize', info.narSize, nar.nar_size);
  if (info.fileHash !== undefined && formatNixHash(info.fileHash) !== nar.file_hash) {
    throw mismatch('FileHash', formatNixHash(info.fileHash), nar.file_hash);
  }
  if (info.fileSize !== undefined && info.fileSize !== nar.file_size)
    throw mismatch('FileSize', info.fileSize, nar.file_size);
}

async function checkReferences(
  index: PathIndex,
  cache: ResolvedCache,
  info: NarInfo,
  hashPart: string,
): Promise<void> {
  const refs = (info.references ?? [])
    .map((r) => parseStorePathBaseName(r).hashPart)
    .filter((h) => h !== hashPart);
  const present = await index.existingHashParts(cache.id, [...new Set(refs)]);
  const missing = (info.references ?? []).filter((r) => {
    const h = r.slice(0, 32);
    return h !== hashPart && !present.has(h);
  });
  if (missing.length > 0) {
    throw new CairnError(
      'UPLOAD_INCOMPLETE',
      `Cannot publish narinfo: ${missing.length} reference(s) are not in the cache; upload dependencies first (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''})`,
    );
  }
}
