import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/**
 * Keeps the folder boundaries of Cairn's design true: imports in src/ go one way,
 * `lib → nix → protocol → {server, agent, cli} → main`; server, agent and cli never import
 * each other; no two folders (at any depth) import each other, directly or around a circle;
 * and no files of src/cli import each other in a circle (the commands and the program did).
 */
const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SRC = join(ROOT, 'src');

/** Each top-level part of src/ and its place in the order: a part imports only lower places. */
const RANK: Readonly<Record<string, number>> = {
  lib: 0,
  nix: 1,
  protocol: 2,
  server: 3,
  agent: 3,
  cli: 3,
  'main.ts': 4,
};

/** One import of one file: where it is written, and the file it names. */
interface Import {
  readonly from: string;
  readonly line: number;
  readonly specifier: string;
  readonly to: string;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(path);
    return e.name.endsWith('.ts') ? [path] : [];
  });
}

/**
 * Every module specifier of a file, read from its syntax tree (so comments and strings are
 * never taken for imports): `import … from`, `import '…'`, `export … from`, `import x = require()`,
 * `import('…')` with a literal, and `import('…')` in a type.
 */
function specifiers(file: string): { specifier: string; line: number }[] {
  const text = readFileSync(file, 'utf8');
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const found: { specifier: string; line: number }[] = [];
  const add = (node: ts.Node | undefined) => {
    if (node && ts.isStringLiteralLike(node)) {
      found.push({
        specifier: node.text,
        line: source.getLineAndCharacterOfPosition(node.getStart()).line + 1,
      });
    }
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) add(node.moduleSpecifier);
    else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference))
      add(node.moduleReference.expression);
    else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword)
      add(node.arguments[0]);
    else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) add(node.argument.literal);
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

/** `src/server/api/x.ts` → `src/server/api` style names, with `/` on every platform. */
const name = (path: string) => relative(ROOT, path).split(sep).join('/');
/** The top-level part of src/ a file belongs to: its first folder, or its own name at the top. */
const part = (file: string) => name(file).split('/')[1] ?? '';
const folder = (file: string) => name(dirname(file));

const files = sourceFiles(SRC);
/** Imports of other files of src/ (packages and node: modules are outside the rules). */
const imports: Import[] = files.flatMap((from) =>
  specifiers(from)
    .filter((s) => s.specifier.startsWith('.'))
    .map((s) => ({ from, ...s, to: resolve(dirname(from), s.specifier) })),
);
const describeImport = (i: Import) => `${name(i.from)}:${i.line} imports '${i.specifier}'`;

/** Fails with every problem found, one a line, or passes when there is none. */
function assertNone(problems: readonly string[], title: string): void {
  if (problems.length > 0) assert.fail(`${title}:\n  ${problems.join('\n  ')}`);
}

/** The groups of nodes that reach each other (Tarjan's strongly connected components), size > 1. */
function cycles(edges: ReadonlyMap<string, ReadonlySet<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const connect = (v: string) => {
    index.set(v, index.size);
    low.set(v, index.get(v) ?? 0);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        connect(w);
        low.set(v, Math.min(low.get(v) ?? 0, low.get(w) ?? 0));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) ?? 0, index.get(w) ?? 0));
      }
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = [];
      let w: string | undefined;
      do {
        w = stack.pop();
        if (w === undefined) break;
        onStack.delete(w);
        group.push(w);
      } while (w !== v);
      if (group.length > 1) out.push(group.sort());
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) connect(v);
  return out;
}

/** The shortest way round from `start` back to itself, through `edges` restricted to `members`. */
function shortestCircle(
  start: string,
  edges: ReadonlyMap<string, ReadonlySet<string>>,
  members: ReadonlySet<string>,
): string[] {
  const cameFrom = new Map<string, string>();
  let frontier = [start];
  while (frontier.length > 0) {
    const next: string[] = [];
    for (const v of frontier) {
      for (const w of edges.get(v) ?? []) {
        if (!members.has(w) || cameFrom.has(w)) continue;
        cameFrom.set(w, v);
        if (w === start) {
          const path = [start];
          for (let at = cameFrom.get(start); at !== undefined && at !== start; at = cameFrom.get(at))
            path.unshift(at);
          return [start, ...path];
        }
        next.push(w);
      }
    }
    frontier = next;
  }
  return [start];
}

/**
 * The cycles among `nodeOf(file)` for the given imports: for each tangle, its shortest circle
 * told hop by hop with an import that makes each hop, and every node caught in the tangle.
 */
function cycleReports(among: readonly Import[], nodeOf: (file: string) => string): string[] {
  const edges = new Map<string, Set<string>>();
  const witness = new Map<string, Import>();
  for (const i of among) {
    const [a, b] = [nodeOf(i.from), nodeOf(i.to)];
    if (a === b) continue;
    edges.set(a, (edges.get(a) ?? new Set()).add(b));
    if (!witness.has(`${a} ${b}`)) witness.set(`${a} ${b}`, i);
  }
  return cycles(edges).map((group) => {
    const members = new Set(group);
    const circle = group
      .map((v) => shortestCircle(v, edges, members))
      .reduce((best, c) => (c.length < best.length ? c : best));
    const hops = circle.slice(1).map((to, k) => {
      const i = witness.get(`${circle[k]} ${to}`);
      return i === undefined ? `${circle[k]} → ${to}` : describeImport(i);
    });
    return `${circle.join(' → ')}:\n    ${hops.join('\n    ')}${
      group.length > circle.length - 1 ? `\n    (caught in the same tangle: ${group.join(', ')})` : ''
    }`;
  });
}

describe('imports in src/', () => {
  it('are read from every file, and every one names a file of src/ that exists', (t) => {
    t.diagnostic(`${files.length} files, ${imports.length} imports of src/ files`);
    // Guards against a test that passes because it read nothing.
    assert.ok(files.length >= 100, `only ${files.length} .ts files found under src/`);
    assert.ok(imports.length >= 400, `only ${imports.length} imports of src/ files found`);
    for (const top of ['lib', 'nix', 'protocol', 'server', 'agent', 'cli', 'main.ts']) {
      assert.ok(
        imports.some((i) => part(i.from) === top),
        `no imports read from src/${top}`,
      );
    }
    assertNone(
      imports.filter((i) => !existsSync(i.to)).map(describeImport),
      'imports of files that do not exist',
    );
    assertNone(
      imports.filter((i) => !name(i.to).startsWith('src/')).map(describeImport),
      'imports of files outside src/',
    );
  });

  it('go only from a part of src/ to the parts before it: lib → nix → protocol → {server, agent, cli} → main', () => {
    const unknown = [...new Set(files.map(part))].filter((p) => RANK[p] === undefined);
    assertNone(unknown, 'parts of src/ with no place in the order (give them a place in RANK)');
    const wrong = imports.flatMap((i) => {
      const [a, b] = [part(i.from), part(i.to)];
      const [ra, rb] = [RANK[a] ?? -1, RANK[b] ?? -1];
      if (a === b || rb < ra) return [];
      const why = rb === ra ? `${a} and ${b} never import each other` : `${a} may not import ${b}`;
      return [`${describeImport(i)}: ${why}`];
    });
    assertNone(wrong, 'imports against the order');
  });

  it('never make a circle between folders, at any depth', () => {
    assertNone(cycleReports(imports, folder), 'folders importing each other');
  });

  it('never make a circle between files of src/cli', () => {
    const inCli = imports.filter((i) => part(i.from) === 'cli' && part(i.to) === 'cli');
    assert.ok(inCli.length >= 20, `only ${inCli.length} imports within src/cli found`);
    assertNone(cycleReports(inCli, name), 'files of src/cli importing each other');
  });
});
