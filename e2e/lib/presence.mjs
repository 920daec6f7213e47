// The presence list the presence tests share: a room's members, shown by display name
// (the auth example's tokens are {userId, name, role}), joined by logged-in clients.
import { within } from './client.mjs';

/** Appended under `resources:` (see `WHOAMI` in stack.mjs). */
export const ROOM = `
  e2e.room.{room}.members:
    presence:
      member: "{{token.name}}"
      join: token != null
      ttl: 60s
      max_members: 10
    access:
      get: "true"
      call: token != null
`;

/** The room the tests use. */
export const RID = 'e2e.room.r1.members';

/** Keeps `client` subscribed to the list; returns the collection (its copy). */
export async function follow(client) {
  const list = await within(client.get(RID), `get ${RID}`);
  // ResClient keeps a collection subscribed while it has listeners.
  const listener = () => {};
  list.on('add', listener);
  list.on('remove', listener);
  return list;
}
