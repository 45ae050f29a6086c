import type { BlobStore } from './blob-store.ts';
import type { BlobStoreConfig } from './blob-store-config.ts';
import { LocalBlobStore } from './local-blob-store.ts';

/**
 * Opens the configured blob store and checks it can be used: the local directory is created and
 * swept of crash leftovers; the S3 bucket must answer a HeadBucket.
 * @throws CairnError STORAGE_UNAVAILABLE when the bucket cannot be used, saying why.
 */
export async function openBlobStore(config: BlobStoreConfig): Promise<{ blobs: BlobStore; close(): void }> {
  if (config.kind === 'local') {
    const blobs = new LocalBlobStore(config.dir);
    await blobs.init();
    return { blobs, close: () => {} };
  }
  // Loaded only when used: the AWS SDK is large, and a local store does not need it.
  const { S3BlobStore } = await import('./s3-blob-store.ts');
  const blobs = new S3BlobStore(config);
  try {
    await blobs.init();
  } catch (err) {
    blobs.destroy();
    throw err;
  }
  return { blobs, close: () => blobs.destroy() };
}
