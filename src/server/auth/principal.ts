import type { TokenScope } from '../../protocol/token-scope.ts';

/** Who is calling: the token that authenticated the request and what it may do. */
export interface Principal {
  readonly tokenId: string;
  readonly tokenName: string;
  readonly workspaceId: number;
  readonly scopes: readonly TokenScope[];
}
