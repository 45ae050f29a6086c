import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * A fake `systemd-run` and `systemctl`, for tests of what the agent does where systemd is the
 * init system. A fake, because this machine (a container) has no systemd as PID 1: the real
 * `systemd-run` cannot start a unit here. The fakes behave as the real ones do in what the agent
 * relies on:
 * - `systemd-run --unit=NAME [-E VAR]... [--] CMD...` records its arguments in
 *   `STATE/NAME.args`, starts CMD in a new session with *only* the `-E` variables (a transient
 *   service inherits nothing else), records its pid in `STATE/NAME.mainpid`, and exits 0 once
 *   it started (`--service-type=exec`).
 * - `systemctl show -p ... NAME` reports `ActiveState=active` while that process runs, and
 *   `LoadState=not-found` once it ended (the unit was collected, `--collect`).
 * - `systemctl list-units ... PATTERN` lists the units named in `STATE/active-units` (one a line)
 *   that match PATTERN, as `NAME loaded active running`.
 * - `systemctl cat NAME` prints `STATE/cat/NAME`, and fails as the real one does when it is missing.
 * Every call of `systemctl` is appended to `STATE/systemctl.calls`.
 */
export interface FakeSystemd {
  /** The directory holding `systemd-run` and `systemctl`, to put first on the agent's PATH. */
  readonly bin: string;
  readonly state: string;
  /** The agent's environment for it: PATH with the fakes first, and the systemd marker directory. */
  readonly env: Record<string, string>;
  /** The arguments `systemd-run` got for `unit`, one per element. */
  args(unit: string): Promise<string[]>;
  /** The `systemctl` command lines run so far. */
  calls(): Promise<string[]>;
}

const SYSTEMD_RUN = `#!/bin/sh
state=@STATE@
unit=; keep=' '
for a in "$@"; do printf '%s\\n' "$a"; done > "$state/.args"
while [ $# -gt 0 ]; do
  case "$1" in
    --unit=*) unit=\${1#--unit=} ;;
    -E) shift; keep="$keep$1 " ;;
    --setenv=*) keep="$keep\${1#--setenv=} " ;;
    --) shift; break ;;
    -*) ;;
    *) break ;;
  esac
  shift
done
[ -n "$unit" ] || { echo "fake systemd-run: no --unit" >&2; exit 1; }
mv "$state/.args" "$state/$unit.args"
for name in $(env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p'); do
  case "$keep" in *" $name "*) ;; *) unset "$name" ;; esac
done
setsid "$@" </dev/null >/dev/null 2>&1 &
echo $! > "$state/$unit.mainpid"
`;

const SYSTEMCTL = `#!/bin/sh
state=@STATE@
echo "$*" >> "$state/systemctl.calls"
for last in "$@"; do :; done
alive() {
  [ -f "$state/$1.mainpid" ] || return 1
  pid=$(cat "$state/$1.mainpid")
  [ -r "/proc/$pid/stat" ] || return 1
  s=$(sed 's/.*) //' "/proc/$pid/stat" | cut -c1)
  [ "$s" != Z ]
}
case "$1" in
  show)
    if alive "$last"; then
      printf 'LoadState=loaded\\nActiveState=active\\nSubState=running\\nResult=success\\nExecMainStatus=0\\n'
    else
      printf 'LoadState=not-found\\nActiveState=inactive\\nSubState=dead\\nResult=success\\nExecMainStatus=0\\n'
    fi ;;
  list-units)
    [ -f "$state/active-units" ] || exit 0
    while read -r u; do
      case "$u" in $last) echo "$u loaded active running $u" ;; esac
    done < "$state/active-units" ;;
  cat)
    [ -f "$state/cat/$last" ] || { echo "No files found for $last." >&2; exit 1; }
    cat "$state/cat/$last" ;;
  *) echo "fake systemctl: unsupported: $*" >&2; exit 1 ;;
esac
`;

/** Writes the fakes under `dir` (see {@link FakeSystemd}). */
export async function fakeSystemd(dir: string, basePath: string): Promise<FakeSystemd> {
  const bin = join(dir, 'bin');
  const state = join(dir, 'state');
  const marker = join(dir, 'run-systemd-system');
  await mkdir(bin, { recursive: true });
  await mkdir(join(state, 'cat'), { recursive: true });
  await mkdir(marker, { recursive: true });
  for (const [name, text] of [
    ['systemd-run', SYSTEMD_RUN],
    ['systemctl', SYSTEMCTL],
  ] as const) {
    await writeFile(join(bin, name), text.replaceAll('@STATE@', `'${state}'`));
    await chmod(join(bin, name), 0o755);
  }
  return {
    bin,
    state,
    env: { PATH: `${bin}:${basePath}`, CAIRN_AGENT_SYSTEMD_DIR: marker },
    args: async (unit) => (await readFile(join(state, `${unit}.args`), 'utf8')).split('\n').slice(0, -1),
    calls: async () =>
      (await readFile(join(state, 'systemctl.calls'), 'utf8').catch(() => '')).split('\n').filter(Boolean),
  };
}
