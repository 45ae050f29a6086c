/**
 * The variables a child the agent runs for a deployment (activation, health check, rollback
 * script) may inherit from the agent: what locates programs, the user, the locale and the time
 * zone, temporary files, proxies and CA certificates, Nix (`NIX_*`) and the XDG directories
 * (Home Manager's activation reads them). Everything else is dropped, first of all every `CAIRN_*` variable, so the agent's token
 * (`CAIRN_AGENT_TOKEN`) never reaches a script of the configuration it deploys.
 */
const KEEP = new Set([
  'PATH',
  'HOME',
  'USER',
  'LOGNAME',
  'SHELL',
  'LANG',
  'LANGUAGE',
  'TZ',
  'TZDIR',
  'LOCALE_ARCHIVE',
  'TMPDIR',
  'TERM',
  // The machine's network settings: Nix in Home Manager's activation and curl in a check need them.
  'http_proxy',
  'https_proxy',
  'no_proxy',
  'all_proxy',
  'HTTP_PROXY',
  'HTTPS_PROXY',
  'NO_PROXY',
  'ALL_PROXY',
  'SSL_CERT_FILE',
  'SSL_CERT_DIR',
  // Home Manager's activation moves a file in its way to <file>.<ext> instead of failing.
  'HOME_MANAGER_BACKUP_EXT',
]);
const KEEP_PREFIXES = ['LC_', 'NIX_', 'XDG_'];

/** The clean environment for a child of a deployment, from the agent's own. */
export function childEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(env)) {
    if (value === undefined || key.toUpperCase().startsWith('CAIRN_')) continue;
    if (KEEP.has(key) || KEEP_PREFIXES.some((p) => key.startsWith(p))) out[key] = value;
  }
  return out;
}
