// Bluesky: the DIDs of the mentioned handles. A handle Bluesky does not know (400) stays
// plain text, as it would in Bluesky's own app; any other failure is the post's outcome.
const asked = $('Bluesky: mentions').all();
const dids = {};
for (const [i, item] of $input.all().entries()) {
  const res = item.json;
  if (res.statusCode === 200 && res.body && res.body.did) dids[asked[i].json.handle] = res.body.did;
  else if (res.statusCode !== 400) return [{ json: { outcome: blueskyAnswer(res, `resolving @${asked[i].json.handle}`) } }];
}
return [{ json: { dids } }];
