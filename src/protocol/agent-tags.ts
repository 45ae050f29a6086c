import { z } from 'zod';
import { NAME_PATTERN } from './token-scope.ts';

/** Most tags one agent may carry: enough for roles, regions and rings, few enough to read in a table. */
export const MAX_AGENT_TAGS = 32;

/** Shows a refused value in an error message, cut short and quoted so odd characters stay visible. */
function shown(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  return JSON.stringify(text.length > 70 ? `${text.slice(0, 70)}…` : text);
}

/**
 * One agent tag, such as `canary` or `eu-west`: the syntax of agent names, so that `tag:NAME`
 * in a rollout policy reads the same. The message names the refused tag.
 */
export const tagSchema = z.string().refine((s) => NAME_PATTERN.test(s), {
  error: (issue) =>
    `invalid tag ${shown(issue.input)}: a tag is 1-63 characters of a-z, 0-9, ".", "_" and "-", starting with a letter or digit`,
});

/** A list of tags, as a request carries it: at most {@link MAX_AGENT_TAGS}. */
export const tagListSchema = z
  .array(tagSchema)
  .max(MAX_AGENT_TAGS, `at most ${MAX_AGENT_TAGS} tags per agent`);
