/** Formats a byte count for people: `1.5 MiB`. */
export function formatBytes(n: number | null): string {
  if (n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  const sign = n < 0 ? '-' : '';
  return u === 0 ? `${sign}${v} B` : `${sign}${v.toFixed(1)} ${units[u]}`;
}

/** A signed byte delta: `+1.5 MiB`, `-200 B`. */
export function formatDelta(n: number): string {
  return n > 0 ? `+${formatBytes(n)}` : n === 0 ? '±0 B' : formatBytes(n);
}

/** How long ago `t` was, as people say it: `just now`, `5 min ago`, `3 h ago`, `2 d ago`. */
export function timeAgo(t: number | null, now: number): string {
  if (t === null) return 'never';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 10) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** An ISO time, or empty. */
export function iso(t: number | null): string {
  return t === null ? '' : new Date(t).toISOString();
}

/** A duration between two times: `12.3 s`, `4 min 2 s`. */
export function duration(from: number | null, to: number | null): string {
  if (from === null || to === null) return '–';
  const s = (to - from) / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** The short form of a store path: its hash's first 8 characters and its name. */
export function shortPath(path: string | null): string {
  if (path === null) return '–';
  const base = path.slice(path.lastIndexOf('/') + 1);
  return base.length > 33 ? `${base.slice(0, 8)}…${base.slice(32)}` : base;
}

const KIND_LABELS: Record<string, string> = {
  nixos: 'NixOS',
  'nix-darwin': 'nix-darwin',
  'home-manager': 'Home Manager',
  plain: 'plain',
};

/** A profile kind as people write it. */
export function kindLabel(kind: string | null): string {
  return kind === null ? '–' : (KIND_LABELS[kind] ?? kind);
}
