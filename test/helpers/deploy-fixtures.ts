import { mkdtemp, readlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildPackages, deleteFromStore, RUN_TAG, type TestPackage } from './nix.ts';
import { cli, type TestServer } from './server.ts';

/** The store path a profile points to now (through its generation link). */
export async function profileTarget(profile: string): Promise<string> {
  const link = await readlink(profile);
  return await readlink(join(profile, '..', link));
}

/** A plain profile whose `bin/activate` prints `activated <name>`. */
export function plainPackage(name: string, options: { activateExit?: number } = {}) {
  const exit = options.activateExit ?? 0;
  return {
    name,
    script: `mkdir -p $out/bin; printf '#!/bin/sh\\necho activated ${name}\\nexit ${exit}\\n' > $out/bin/activate; chmod +x $out/bin/activate`,
  };
}

/** A leaf package of about `kib` KiB (zeros, and the run's tag), so that size changes show. */
export function sizedPackage(name: string, kib: number): TestPackage {
  return {
    name,
    script: `mkdir -p $out; head -c ${kib * 1024} /dev/zero > $out/blob; echo ${RUN_TAG} > $out/tag`,
  };
}

/** A plain profile with `bin/activate` (printing `activated <name>`) that references `deps`, so they are in its closure. */
export function plainSystem(name: string, deps: string[]): TestPackage {
  const v = (d: string) => `$dep_${d.replace(/[^A-Za-z0-9]/g, '_')}`;
  return {
    name,
    deps,
    script: `mkdir -p $out/bin; printf '#!/bin/sh\\necho activated ${name}\\n' > $out/bin/activate; chmod +x $out/bin/activate; echo ${deps.map(v).join(' ')} > $out/deps`,
  };
}

/**
 * A NixOS-kind closure (nixos-version and bin/switch-to-configuration) whose switch appends
 * "<its store path> <goal>" to `record` and exits with `exit`, behaving as the real one does:
 * - `currentSystem`: a link the switch points at its own store path when it activates (goal
 *   `switch` or `test`, exit 0 or 4), as NixOS's activation does with /run/current-system;
 *   exit 100 (the init system changed) and `boot` leave it alone.
 * - `preSwitchCheck`: the name of a pre-switch check that fails: a `switch` then prints what the
 *   real one prints ("Pre-switch check '<name>' failed", "Pre-switch checks failed") and exits 1
 *   before touching anything; `boot` goes through (exit 0).
 * - `envDump`: a file the switch writes its environment (`env`) to.
 * - `kernel`: a file `$out/kernel` links to, as a real system's links to its kernel in the store
 *   (two systems with the same kernel link to the same file).
 * - `check`: `bin/check` exits with it (a command health check).
 * - `dryActivate`: lines `dry-activate` prints (to stderr, as the real one does) before it exits
 *   0, touching nothing; it is recorded like any goal.
 * - `specialisations`: names of specialisations, each a system under `specialisation/<name>`
 *   with the same switch-to-configuration (a directory in the closure here; a real one links to
 *   a store path of its own, which the agent resolves the same way).
 */
export function nixosPackage(
  name: string,
  record: string,
  options: {
    exit?: number;
    currentSystem?: string;
    preSwitchCheck?: string;
    envDump?: string;
    kernel?: string;
    check?: number;
    specialisations?: readonly string[];
    dryActivate?: readonly string[];
  } = {},
): TestPackage {
  const exit = options.exit ?? 0;
  const body = [
    'top=$(dirname "$(dirname "$0")")',
    `echo "$top $1" >> ${record}`,
    options.dryActivate
      ? `if [ "$1" = dry-activate ]; then ${options.dryActivate.map((l) => `echo '${l}' >&2; `).join('')}exit 0; fi`
      : '',
    options.envDump ? `env > ${options.envDump}` : '',
    options.preSwitchCheck
      ? `if [ "$1" = switch ]; then echo "Pre-switch check '${options.preSwitchCheck}' failed" >&2; echo "Pre-switch checks failed" >&2; exit 1; fi`
      : '',
    'echo switching to configuration',
    'if [ "$1" = boot ]; then exit 0; fi',
    options.currentSystem && (exit === 0 || exit === 4) ? `ln -sfn "$top" ${options.currentSystem}` : '',
    `exit ${exit}`,
  ]
    .filter(Boolean)
    .join('\n');
  return {
    name,
    script: [
      'mkdir -p $out/bin',
      'echo 24.05 > $out/nixos-version',
      writeScript('bin/switch-to-configuration', body),
      options.kernel ? `ln -s ${options.kernel} $out/kernel` : '',
      options.check === undefined ? '' : writeScript('bin/check', `exit ${options.check}`),
      ...(options.specialisations ?? []).flatMap((spec) => [
        `mkdir -p $out/specialisation/${spec}; echo 24.05 > $out/specialisation/${spec}/nixos-version`,
        writeScript(`specialisation/${spec}/bin/switch-to-configuration`, body),
      ]),
    ]
      .filter(Boolean)
      .join('\n'),
  };
}

/** A cache `main`, agents with their tokens, and a place for profiles: what a deploy test starts from. */
export interface DeployWorld {
  readonly env: Record<string, string>;
  readonly profiles: string;
  readonly publicKey: string;
  createAgent(name: string): Promise<string>;
  /** Builds packages, pushes their closures to `main` and removes them from the local store, as CI would leave them. */
  publish(packages: Parameters<typeof buildPackages>[0]): Promise<Map<string, string>>;
}

/** Prepares a server for deployment tests. */
export async function deployWorld(server: TestServer): Promise<DeployWorld> {
  const env = { CAIRN_SERVER: server.url, CAIRN_TOKEN: server.adminToken };
  const created = await cli(['cache', 'create', 'main'], env);
  if (created.code !== 0) throw new Error(created.stderr);
  const profiles = await mkdtemp(join(tmpdir(), 'cairn-profiles-'));
  return {
    env,
    profiles,
    publicKey: created.stdout.trim(),
    createAgent: async (name) => {
      const r = await cli(['agent', 'create', name], env);
      if (r.code !== 0) throw new Error(r.stderr);
      return r.stdout.trim();
    },
    publish: async (packages) => {
      const paths = await buildPackages(packages);
      const pushed = await cli(['push', 'main', ...paths.values()], env);
      if (pushed.code !== 0) throw new Error(pushed.stderr);
      // The agent must download them, as on another machine.
      await deleteFromStore([...paths.values()]);
      return paths;
    },
  };
}

/**
 * Shell commands (for a {@link TestPackage} script) that write an executable `$out/<rel>` with
 * `body` as its text. The body is quoted as a here-document, so `$` in it is left for run time;
 * it must not contain `${`, which Nix would take as an antiquotation.
 */
export function writeScript(rel: string, body: string): string {
  return `mkdir -p "$(dirname "$out/${rel}")"; cat > "$out/${rel}" <<'CAIRN_EOF'\n#!/bin/sh\n${body}\nCAIRN_EOF\nchmod +x "$out/${rel}"`;
}

/**
 * A nix-darwin-kind closure (`darwin-version`, `activate`, `activate-user`): each script appends
 * "<its store path> <script> HOME=<HOME>" to `record` (`activate-user` also "user=<who runs
 * it>"); `activate` then exits with `exit`. The legacy `activate-user` (nix-darwin before 25.05)
 * prints a deprecation warning, as real ones did for some options, so only the marker line tells
 * it from the stub. `userStub` makes `activate-user` the stub nix-darwin 25.05 and later ship: it
 * has the line `# nix-darwin: deprecated` and fails when run.
 */
export function darwinPackage(
  name: string,
  record: string,
  options: { exit?: number; userStub?: boolean } = {},
): TestPackage {
  const line = (script: string) => `echo "$(dirname "$0") ${script} HOME=$HOME" >> ${record}`;
  const user = options.userStub
    ? `# nix-darwin: deprecated\necho "activate-user: this script is deprecated" >&2\n${line('activate-user')}\nexit 1`
    : `# user activation\necho "warning: system.defaults.foo is deprecated and no longer used"\necho "$(dirname "$0") activate-user user=$(id -un) HOME=$HOME" >> ${record}`;
  return {
    name,
    script: [
      'mkdir -p $out',
      'echo \'{"darwinLabel":"25.05"}\' > $out/darwin-version.json',
      'echo 25.05 > $out/darwin-version',
      writeScript('activate-user', user),
      writeScript('activate', `${line('activate')}\necho activating nix-darwin\nexit ${options.exit ?? 0}`),
    ].join('\n'),
  };
}

/**
 * A Home Manager-kind closure (`hm-version`, `activate`, `home-files`): `activate` appends
 * "<its store path> activate USER=<USER> HOME=<HOME> args=<its arguments>" to `record` and exits
 * with `exit` (before changing anything, as a failed check does). `driver` gives it a
 * `gen-version` of 1, as Home Manager generations since it left the profile to its caller have.
 *
 * With `home` (a directory standing for the user's home: the real script uses $HOME, which the
 * agent sets to the real one) and `profile`, `activate` behaves as Home Manager's own does, with
 * `files` (name -> content) as its home files:
 * - the old generation is read from `profile` (no `--driver-version 1`: the legacy script), or
 *   from the `current-home` GC root under `$XDG_STATE_HOME/home-manager/gcroots` (driver 1);
 *   "<store path> old=<old generation>" is appended to `record`;
 * - checkLinkTargets: a file in the way of a home file that is not a link fails activation with
 *   "Existing file '<path>' would be clobbered", unless `HOME_MANAGER_BACKUP_EXT` is set: then it
 *   is moved to `<path>.<ext>` (and a backup already there fails it);
 * - the legacy script sets `profile` to its own generation (`nix-env --set`), when it changed;
 * - the old generation's links the new one lacks are removed, the new ones linked, and the GC
 *   root pointed at the new generation.
 */
export function homeManagerPackage(
  name: string,
  record: string,
  options: {
    exit?: number;
    driver?: boolean;
    home?: string;
    profile?: string;
    files?: Record<string, string>;
  } = {},
): TestPackage {
  const body = [
    'new=$(dirname "$0")',
    `echo "$new activate USER=$USER HOME=$HOME args=$*" >> ${record}`,
    'echo activating home-manager',
    `if [ ${options.exit ?? 0} -ne 0 ]; then exit ${options.exit ?? 0}; fi`,
  ];
  if (options.home && options.profile) {
    const home = options.home;
    body.push(
      'driver=0; if [ "$1" = --driver-version ]; then driver=$2; fi',
      'gc="$XDG_STATE_HOME/home-manager/gcroots/current-home"',
      `if [ "$driver" = 1 ]; then old=$(readlink -e "$gc" || true); else old=$(readlink -e ${options.profile} || true); fi`,
      `echo "$new old=$old" >> ${record}`,
      'errors=0',
      'for f in $(ls -A "$new/home-files"); do',
      `  t="${home}/$f"`,
      '  if [ -e "$t" ] && [ ! -L "$t" ]; then',
      `    if [ -z "$HOME_MANAGER_BACKUP_EXT" ]; then echo "Existing file '$t' would be clobbered" >&2; errors=1`,
      `    elif [ -e "$t.$HOME_MANAGER_BACKUP_EXT" ]; then echo "Existing file '$t.$HOME_MANAGER_BACKUP_EXT' would be clobbered by backing up '$t'" >&2; errors=1`,
      `    else echo "Existing file '$t' is in the way of '$new/home-files/$f', will be moved to '$t.$HOME_MANAGER_BACKUP_EXT'"; fi`,
      '  fi',
      'done',
      'if [ $errors -ne 0 ]; then exit 1; fi',
      `if [ "$driver" != 1 ] && [ "$old" != "$new" ]; then nix-env --profile ${options.profile} --set "$new" >/dev/null || exit 1; fi`,
      'if [ -n "$old" ] && [ "$old" != "$new" ]; then',
      `  for f in $(ls -A "$old/home-files"); do [ -e "$new/home-files/$f" ] || rm -f "${home}/$f"; done`,
      'fi',
      'for f in $(ls -A "$new/home-files"); do',
      `  t="${home}/$f"`,
      '  if [ -e "$t" ] && [ ! -L "$t" ]; then mv "$t" "$t.$HOME_MANAGER_BACKUP_EXT"; fi',
      '  ln -sfn "$new/home-files/$f" "$t"',
      'done',
      'mkdir -p "$(dirname "$gc")"; ln -sfn "$new" "$gc"',
    );
  }
  const files = Object.entries(options.files ?? {}).map(
    ([file, content]) => `printf '%s' '${content}' > "$out/home-files/${file}"`,
  );
  return {
    name,
    script: [
      'mkdir -p $out/home-files',
      'echo 25.05 > $out/hm-version',
      options.driver ? 'echo 1 > $out/gen-version' : '',
      ...files,
      writeScript('activate', body.join('\n')),
    ]
      .filter(Boolean)
      .join('\n'),
  };
}

/** Writes a deploy.json with `body` into `dir` and returns its path. */
export async function writeDeployJson(dir: string, body: object): Promise<string> {
  const file = join(dir, `deploy-${Math.random().toString(36).slice(2)}.json`);
  await writeFile(file, JSON.stringify(body));
  return file;
}
