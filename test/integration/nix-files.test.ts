import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { nixEnv } from '../helpers/nix.ts';

/**
 * The packaging files: every Nix expression under nix/ parses, every module option is in
 * docs/nixos.md, and the plain service files in contrib/ are valid where their tools exist.
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const execFileAsync = promisify(execFile);

async function filesUnder(dir: string, suffix: string): Promise<string[]> {
  const entries = await readdir(join(ROOT, dir), { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith(suffix))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)))
    .sort();
}

/** Runs a command; resolves with its exit code and output instead of throwing. */
async function attempt(
  cmd: string,
  args: readonly string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(cmd, [...args], { cwd: ROOT, env: nixEnv() });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message: string };
    return {
      code: typeof e.code === 'number' ? e.code : -1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? e.message,
    };
  }
}

async function which(cmd: string): Promise<boolean> {
  return (await attempt('sh', ['-c', `command -v ${cmd}`])).code === 0;
}

/**
 * The option names a module declares, such as `services.cairn-agent.tokenFile`, read by calling
 * the module with a stand-in `lib` whose mkOption marks a leaf. Only `options` is forced, so the
 * module's `config`, defaults and types are never evaluated and nixpkgs is not needed.
 */
async function moduleOptions(file: string): Promise<string[]> {
  const expr = `{ file }:
    let
      leaf = _: { __cairnOption = true; };
      lib = { mkOption = leaf; mkEnableOption = leaf; };
      module = import (/. + file) { config = { }; inherit lib; pkgs = { }; };
      walk = prefix: set:
        builtins.concatLists (builtins.attrValues (builtins.mapAttrs (name: value:
          if value ? __cairnOption then [ "\${prefix}\${name}" ] else walk "\${prefix}\${name}." value) set));
    in walk "" module.options`;
  const r = await attempt('nix-instantiate', [
    '--eval',
    '--strict',
    '--json',
    '--argstr',
    'file',
    join(ROOT, file),
    '-E',
    expr,
  ]);
  assert.equal(r.code, 0, `cannot read the options of ${file}: ${r.stderr}`);
  return (JSON.parse(r.stdout) as string[]).sort();
}

/** docs/nixos.md split at `## ` headings: heading -> body. */
function sections(markdown: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of markdown.split(/^## /m).slice(1)) {
    const nl = part.indexOf('\n');
    out.set(part.slice(0, nl).trim(), part.slice(nl + 1));
  }
  return out;
}

/**
 * What the server module makes of `settings` (a Nix attrset expression of
 * `services.cairn-server` values; the options' own defaults fill the rest): its start script,
 * credentials, environment and failed assertions. The module is called with a stand-in `lib`
 * and `pkgs` (no nixpkgs here) whose `escapeShellArgs` is `builtins.toJSON`, so that the test
 * reads the server's argument vector exactly, and whose `writeShellScript` is the script's text.
 */
async function serverUnit(settings: string): Promise<{
  script: string;
  args: string[];
  loadCredential: string[];
  environment: Record<string, string>;
  environmentFile: string[];
  failedAssertions: string[];
  backup: { script: string; loadCredential: string[]; onCalendar: string } | null;
}> {
  const expr = `{ file, settings }:
    let
      hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
      lib = {
        mkOption = o: o;
        mkEnableOption = _: { default = false; };
        literalExpression = x: x;
        types = { };
        mkIf = c: v: if c then v else { };
        inherit hasPrefix;
        hasInfix = i: s: builtins.length (builtins.split i s) > 1;
        removePrefix = p: s: if hasPrefix p s then builtins.substring (builtins.stringLength p) (-1) s else s;
        optional = c: x: if c then [ x ] else [ ];
        optionals = c: xs: if c then xs else [ ];
        optionalAttrs = c: a: if c then a else { };
        optionalString = c: s: if c then s else "";
        escapeShellArgs = builtins.toJSON;
        inherit (builtins) concatStringsSep length filter;
      };
      pkgs = {
        writeShellScript = _name: text: text;
        callPackage = _: _: "/nix/store/cairn";
        xz = "xz";
        zstd = "zstd";
      };
      given = (import (/. + settings)).services.cairn-server;
      call = cfg: import (/. + file) { config.services.cairn-server = cfg; inherit lib pkgs; };
      groups = [ "database" "metrics" "backup" ];
      options = (call { }).options.services.cairn-server;
      defaults = builtins.mapAttrs (_: o: o.default) (builtins.removeAttrs options groups);
      groupDefaults = g: builtins.mapAttrs (_: o: o.default) options.\${g};
      cfg = defaults // given // builtins.listToAttrs (map (g: { name = g; value = groupDefaults g // (given.\${g} or { }); }) groups);
      module = call (cfg // { enable = true; });
      unit = module.config.systemd.services.cairn-server;
    in {
      script = unit.serviceConfig.ExecStart;
      loadCredential = unit.serviceConfig.LoadCredential;
      environment = unit.environment;
      environmentFile = unit.serviceConfig.EnvironmentFile;
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) module.config.assertions);
      backup =
        if (module.config.systemd.services.cairn-server-backup or { }) ? serviceConfig then {
          script = module.config.systemd.services.cairn-server-backup.serviceConfig.ExecStart;
          loadCredential = module.config.systemd.services.cairn-server-backup.serviceConfig.LoadCredential;
          onCalendar = module.config.systemd.timers.cairn-server-backup.timerConfig.OnCalendar;
        } else null;
    }`;
  const dir = await mkdtemp(join(tmpdir(), 'cairn-nix-settings-'));
  try {
    const file = join(dir, 'settings.nix');
    await writeFile(file, settings);
    const r = await attempt('nix-instantiate', [
      '--eval',
      '--strict',
      '--json',
      '--argstr',
      'file',
      join(ROOT, 'nix/modules/nixos-server.nix'),
      '--argstr',
      'settings',
      file,
      '-E',
      expr,
    ]);
    assert.equal(r.code, 0, `cannot evaluate the server module: ${r.stderr}`);
    const unit = JSON.parse(r.stdout) as Omit<Awaited<ReturnType<typeof serverUnit>>, 'args'>;
    const exec = /^exec \/nix\/store\/cairn\/bin\/cairn server (\[.*\])$/m.exec(unit.script);
    assert.ok(exec, `no exec line in the start script:\n${unit.script}`);
    return { ...unit, args: JSON.parse(exec[1]!) as string[] };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The NixOS agent module's service for `settings` (a Nix file of `{ services.cairn-agent = ...; }`),
 * evaluated as {@link serverUnit} evaluates the server's: its start script, credentials and
 * failed assertions. Option defaults that refer to other options (`stateDir` to `name`) are
 * resolved by evaluating the module against its own result.
 */
async function agentUnit(settings: string): Promise<{
  script: string;
  loadCredential: string[];
  failedAssertions: string[];
}> {
  const expr = `{ file, settings }:
    let
      hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
      lib = {
        mkOption = o: o;
        mkEnableOption = _: { default = false; };
        literalExpression = x: x;
        types = { };
        mkIf = c: v: if c then v else { };
        inherit hasPrefix;
        removePrefix = p: s: if hasPrefix p s then builtins.substring (builtins.stringLength p) (-1) s else s;
        optional = c: x: if c then [ x ] else [ ];
        optionalAttrs = c: a: if c then a else { };
        optionalString = c: s: if c then s else "";
        escapeShellArgs = builtins.toJSON;
        inherit (builtins) all;
      };
      pkgs = {
        writeShellScript = _name: text: text;
        callPackage = _: _: "/nix/store/cairn";
      };
      given = (import (/. + settings)).services.cairn-agent;
      call = cfg: import (/. + file) {
        config = { services.cairn-agent = cfg; networking.hostName = "web1"; nix.package = "/nix/store/nix"; };
        inherit lib pkgs;
      };
      cfg = builtins.mapAttrs (_: o: o.default or null) (call cfg).options.services.cairn-agent // given // { enable = true; };
      module = call cfg;
      unit = module.config.systemd.services.cairn-agent;
    in {
      script = unit.serviceConfig.ExecStart;
      loadCredential = unit.serviceConfig.LoadCredential;
      failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) module.config.assertions);
    }`;
  const dir = await mkdtemp(join(tmpdir(), 'cairn-nix-settings-'));
  try {
    const file = join(dir, 'settings.nix');
    await writeFile(file, settings);
    const r = await attempt('nix-instantiate', [
      '--eval',
      '--strict',
      '--json',
      '--argstr',
      'file',
      join(ROOT, 'nix/modules/nixos-agent.nix'),
      '--argstr',
      'settings',
      file,
      '-E',
      expr,
    ]);
    assert.equal(r.code, 0, `cannot evaluate the agent module: ${r.stderr}`);
    return JSON.parse(r.stdout) as Awaited<ReturnType<typeof agentUnit>>;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('nix/', () => {
  it('has the flake, the package and the four modules', async () => {
    const files = await filesUnder('nix', '.nix');
    for (const f of [
      'nix/flake.nix',
      'nix/default.nix',
      'nix/package.nix',
      'nix/agent.nix',
      'nix/modules/nixos-agent.nix',
      'nix/modules/nixos-server.nix',
      'nix/modules/darwin-agent.nix',
      'nix/modules/home-manager-agent.nix',
    ]) {
      assert.ok(files.includes(f), `${f} is missing`);
    }
  });

  it('parses every .nix file with nix-instantiate --parse', async () => {
    const files = await filesUnder('nix', '.nix');
    const failures: string[] = [];
    await Promise.all(
      files.map(async (f) => {
        const r = await attempt('nix-instantiate', ['--parse', f]);
        if (r.code !== 0) failures.push(`${f}: ${r.stderr.trim()}`);
      }),
    );
    assert.deepEqual(failures, []);
  });

  it('documents every module option in docs/nixos.md, in the section of its module, and no other', async () => {
    const docs = sections(await readFile(join(ROOT, 'docs/nixos.md'), 'utf8'));
    for (const file of await filesUnder('nix/modules', '.nix')) {
      const options = await moduleOptions(file);
      assert.ok(options.length > 3, `${file} declares no options`);
      const heading = [...docs.keys()].find((h) => h.includes(`\`${file}\``));
      assert.ok(heading, `docs/nixos.md has no "## ..." section naming \`${file}\``);
      const body = docs.get(heading)!;
      const missing = options.filter((o) => !body.includes(`\`${o}\``));
      assert.deepEqual(missing, [], `docs/nixos.md (${heading}) does not document these options`);
      const documented = new Set(
        [...body.matchAll(/`(services\.cairn-(?:agent|server)\.[A-Za-z0-9_.]+)`/g)].map((m) => m[1]!),
      );
      const stale = [...documented].filter((o) => !options.includes(o));
      assert.deepEqual(stale, [], `docs/nixos.md (${heading}) documents options ${file} does not have`);
    }
  });

  it('runs the agent with its token file, read from its credential at start', async () => {
    const unit = await agentUnit(
      '{ services.cairn-agent = { serverUrl = "https://c.example"; tokenFile = "/run/secrets/agent"; }; }',
    );
    assert.deepEqual(unit.loadCredential, ['agent-token:/run/secrets/agent']);
    assert.match(unit.script, /CAIRN_AGENT_TOKEN="\$\(< "\$CREDENTIALS_DIRECTORY\/agent-token"\)"/);
    assert.match(
      unit.script,
      /^exec \/nix\/store\/cairn\/bin\/cairn deploy agent \["web1","system","--state-dir","\/var\/lib\/cairn-agent\/web1"\]$/m,
    );
    assert.deepEqual(unit.failedAssertions, []);
  });

  it('enrols the agent with an enrolment token file instead, once, keeping its token in stateDir', async () => {
    const unit = await agentUnit(
      '{ services.cairn-agent = { serverUrl = "https://c.example"; enrolTokenFile = "/run/secrets/enrol"; }; }',
    );
    assert.deepEqual(unit.loadCredential, ['enrol-token:/run/secrets/enrol']);
    assert.doesNotMatch(unit.script, /CAIRN_AGENT_TOKEN/);
    assert.match(
      unit.script,
      /^exec \/nix\/store\/cairn\/bin\/cairn deploy agent \["web1","system","--state-dir","\/var\/lib\/cairn-agent\/web1"\] --enrol --enrol-token-file "\$CREDENTIALS_DIRECTORY\/enrol-token"$/m,
    );
    assert.deepEqual(unit.failedAssertions, []);
  });

  it('takes exactly one of tokenFile and enrolTokenFile, each outside the store', async () => {
    const both = await agentUnit(
      '{ services.cairn-agent = { serverUrl = "x"; tokenFile = "/run/a"; enrolTokenFile = "/run/e"; }; }',
    );
    assert.deepEqual(both.failedAssertions, [
      'services.cairn-agent: set exactly one of tokenFile and enrolTokenFile.',
    ]);
    const neither = await agentUnit('{ services.cairn-agent = { serverUrl = "x"; }; }');
    assert.deepEqual(neither.failedAssertions, [
      'services.cairn-agent: set exactly one of tokenFile and enrolTokenFile.',
    ]);
    const inStore = await agentUnit(
      '{ services.cairn-agent = { serverUrl = "x"; enrolTokenFile = "/nix/store/abc-enrol"; }; }',
    );
    assert.equal(inStore.failedAssertions.length, 1);
    assert.match(inStore.failedAssertions[0]!, /must be absolute paths outside the Nix store/);
  });

  it('runs the server with its defaults: SQLite in dataDir, no credentials', async () => {
    const unit = await serverUnit('{ services.cairn-server = { }; }');
    assert.deepEqual(unit.args, [
      '--listen',
      '127.0.0.1:8080',
      '--data-dir',
      '/var/lib/cairn',
      '--log-level',
      'info',
    ]);
    assert.deepEqual(unit.loadCredential, []);
    assert.doesNotMatch(unit.script, /CREDENTIALS_DIRECTORY/);
    assert.deepEqual(unit.environment, {});
    assert.deepEqual(unit.failedAssertions, []);
  });

  it('turns the replica settings of docs/scale-out.md into the command line, secrets read at start', async () => {
    const doc = await readFile(join(ROOT, 'docs/scale-out.md'), 'utf8');
    const section = doc.slice(doc.indexOf('\n## NixOS module settings for two replicas\n'));
    const example = /```nix\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(section.startsWith('\n## NixOS module') && example, 'no nix block in the section');
    const unit = await serverUnit(example);
    assert.deepEqual(unit.args, [
      '--listen',
      '0.0.0.0:8080',
      '--data-dir',
      '/var/lib/cairn',
      '--log-level',
      'info',
      '--public-url',
      'https://cairn.example.com',
      '--blob-store',
      's3://cairn-nars?endpoint=https://s3.example.com&region=eu-west-1&path-style=true',
      '--trusted-proxy',
      '10.0.0.2',
    ]);
    // The database URL: a credential systemd hands the start script, never in the unit.
    assert.deepEqual(unit.loadCredential, ['database-url:/run/secrets/cairn-database-url']);
    assert.match(
      unit.script,
      /CAIRN_DATABASE_URL="\$\(< "\$CREDENTIALS_DIRECTORY\/database-url"\)"\n\s*export CAIRN_DATABASE_URL\n/,
    );
    assert.deepEqual(unit.environment, {});
    assert.deepEqual(unit.environmentFile, ['/run/secrets/cairn-s3.env']);
    assert.deepEqual(unit.failedAssertions, []);
  });

  it('joins several trusted proxies with commas', async () => {
    const unit = await serverUnit('{ services.cairn-server.trustedProxies = [ "10.0.0.2" "10.0.1.0/24" ]; }');
    assert.deepEqual(unit.args.slice(-2), ['--trusted-proxy', '10.0.0.2,10.0.1.0/24']);
  });

  it('serves the metrics on a second address, with series per agent, when the metrics options say so', async () => {
    const unit = await serverUnit(
      '{ services.cairn-server.metrics = { listen = "127.0.0.1:9464"; perAgent = true; }; }',
    );
    assert.deepEqual(unit.args.slice(-3), ['--metrics-listen', '127.0.0.1:9464', '--metrics-per-agent']);
  });

  it('schedules backups with a systemd timer when backup.enable is set, and none otherwise', async () => {
    assert.equal((await serverUnit('{ services.cairn-server = { }; }')).backup, null);
    const unit = await serverUnit(
      '{ services.cairn-server = { host = "0.0.0.0"; port = 9000; backup = { enable = true; startAt = "*-*-* 03:00:00"; keep = 3; includeStore = true; }; }; }',
    );
    assert.ok(unit.backup);
    assert.equal(unit.backup.onCalendar, '*-*-* 03:00:00');
    // The token the first start wrote, handed over by systemd, never on the command line.
    assert.deepEqual(unit.backup.loadCredential, ['admin-token:/var/lib/cairn/admin-token']);
    assert.match(unit.backup.script, /CAIRN_TOKEN="\$\(< "\$CREDENTIALS_DIRECTORY\/admin-token"\)"/);
    // A wildcard listen address is reached on the loopback address.
    assert.match(unit.backup.script, /export CAIRN_SERVER=\["http:\/\/127\.0\.0\.1:9000"\]/);
    assert.match(
      unit.backup.script,
      /\/nix\/store\/cairn\/bin\/cairn server backup --to "\$dir\/cairn-\$\(date -u \+%Y%m%dT%H%M%SZ\)\.backup" --include-store\n/,
    );
    assert.match(unit.backup.script, /tail -n \+4 /);
    const own = await serverUnit(
      '{ services.cairn-server.backup = { enable = true; tokenFile = "/run/secrets/cairn-admin"; }; }',
    );
    assert.deepEqual(own.backup?.loadCredential, ['admin-token:/run/secrets/cairn-admin']);
  });

  it('refuses a database URL file in the store, or given with another database setting', async () => {
    const inStore = await serverUnit('{ services.cairn-server.database.urlFile = "/nix/store/abc-url"; }');
    assert.deepEqual(inStore.failedAssertions, [
      'services.cairn-server.database.urlFile must be an absolute path outside the Nix store, such as a secret from agenix or sops-nix.',
    ]);
    const both = await serverUnit(
      '{ services.cairn-server.database = { urlFile = "/run/secrets/url"; url = "postgres:///cairn"; }; }',
    );
    assert.deepEqual(both.failedAssertions, [
      'services.cairn-server: set at most one of database.url, database.urlFile and database.createLocally.',
    ]);
  });
});

describe('contrib/', () => {
  it('has systemd units that systemd-analyze verify accepts without a warning', async (t) => {
    if (!(await which('systemd-analyze'))) {
      t.skip('systemd-analyze is not installed');
      return;
    }
    const units = await filesUnder('contrib/systemd', '.service');
    assert.deepEqual(units, ['contrib/systemd/cairn-agent.service', 'contrib/systemd/cairn-server.service']);
    for (const unit of units) {
      const r = await attempt('systemd-analyze', ['verify', unit]);
      assert.equal(r.code, 0, `${unit}: ${r.stderr}`);
      // Unknown keys and bad values are warnings with exit code 0: none is allowed either.
      assert.equal(r.stderr.trim(), '', `${unit}: ${r.stderr}`);
    }
  });

  it('has a launchd plist that parses', async (t) => {
    const plist = 'contrib/launchd/com.cairn.agent.plist';
    if (await which('plutil')) {
      const r = await attempt('plutil', ['-lint', plist]);
      assert.equal(r.code, 0, r.stdout + r.stderr);
    } else if (await which('python3')) {
      const r = await attempt('python3', [
        '-c',
        'import plistlib, sys, json; print(json.dumps(plistlib.load(open(sys.argv[1], "rb"))))',
        plist,
      ]);
      assert.equal(r.code, 0, r.stderr);
      const parsed = JSON.parse(r.stdout) as { Label: string; ProgramArguments: string[] };
      assert.equal(parsed.Label, 'com.cairn.agent');
      assert.match(parsed.ProgramArguments.join(' '), /wait4path \/nix\/store .*cairn deploy agent/);
    } else {
      t.skip('neither plutil nor python3 is installed');
    }
  });
});
