// Instagram and Threads: was this post published already (a lost callback, n8n restarted
// after the post)? Neither API takes an idempotency key, so the account's latest posts are
// compared: the same text published since publishAt is this post. Otherwise one item per
// container to create.
const prepared = $(`${NET.name}: prepare`).first().json;
const { post, graph } = prepared;
const listing = $input.first().json;
if (listing.statusCode !== 200) return [{ json: { outcome: graphAnswer(listing, 'reading recent posts') } }];
const since = Date.parse(post.publishAt) - 60 * 1000;
// Graph writes offsets as +0000; Date.parse wants +00:00.
const when = (t) => Date.parse(String(t).replace(/([+-]\d\d)(\d\d)$/, '$1:$2'));
const earlier = ((listing.body && listing.body.data) || []).find((p) => p[NET.textField] === graph.text
  && when(p.timestamp) >= since);
if (earlier) {
  const outcome = {
    ok: false, code: `${NET.name}Duplicate`, duplicate: true, externalId: String(earlier.id),
    message: `${NET.name} already has this post: ${earlier.id}`,
  };
  if (earlier.permalink) outcome.externalUrl = earlier.permalink;
  return [{ json: { outcome } }];
}
return graph.containers.map((body) => ({ json: { body } }));
