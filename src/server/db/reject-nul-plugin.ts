import {
  type KyselyPlugin,
  OperationNodeTransformer,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type PrimitiveValueListNode,
  type QueryResult,
  type RootOperationNode,
  type UnknownRow,
  type ValueNode,
} from 'kysely';
import { CairnError } from '../../lib/cairn-error.ts';

/**
 * Refuses queries whose text values contain a NUL character, on every database alike.
 *
 * PostgreSQL cannot store NUL in text and fails any query that mentions one, so a name taken
 * from a URL such as `/caches/a%00b` ended in a 500 there and in a 404 on SQLite, and a token
 * named with a NUL was stored by one and refused by the other. Checking every bound value here
 * gives both the same answer, a 400, whichever repository method the value reached.
 */
export class RejectNulPlugin implements KyselyPlugin {
  readonly #checker = new NulChecker();

  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    return this.#checker.transformNode(args.node, args.queryId);
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result;
  }
}

/** Walks a query and throws at the first text value with a NUL; changes nothing. */
class NulChecker extends OperationNodeTransformer {
  protected override transformValue(node: ValueNode): ValueNode {
    check(node.value);
    return node;
  }

  // `where x in (...)` and inserted rows carry their values in this node, not in ValueNodes.
  protected override transformPrimitiveValueList(node: PrimitiveValueListNode): PrimitiveValueListNode {
    for (const value of node.values) check(value);
    return node;
  }
}

function check(value: unknown): void {
  if (typeof value === 'string' && value.includes('\0')) {
    throw new CairnError(
      'INVALID_ARGUMENT',
      `Cannot use the value: it contains a NUL character (${JSON.stringify(value.slice(0, 80))})`,
    );
  }
}
