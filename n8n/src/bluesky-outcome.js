// Bluesky: the branch's exit, one outcome per post: the at:// URI of the new post and
// its bsky.app URL, or what the failing answer means (see bluesky-answer.js).
const res = $input.first().json;
if (res.outcome) return [{ json: { outcome: res.outcome } }];
if (res.statusCode === 200 && res.body && res.body.uri) {
  const [, , did, , rkey] = res.body.uri.split('/');
  return [{ json: { outcome: { ok: true, externalId: res.body.uri, externalUrl: `https://bsky.app/profile/${did}/post/${rkey}` } } }];
}
// The failed sign-in comes here straight from "Bluesky: signed in?".
const session = $('Bluesky: create session').first().json;
const what = session.statusCode === 200 ? 'creating the post' : `signing in with the credential "${BLUESKY_CREDENTIAL}"`;
return [{ json: { outcome: blueskyAnswer(res, what) } }];
