// Bluesky: the app.bsky.feed.post record: text, facets (resolved mentions included),
// and either the uploaded images (with alt text) or a link card (app.bsky.embed.external)
// for the post's link.
const prepared = $('Bluesky: prepare').first().json;
const session = $('Bluesky: create session').first().json.body;
const { bluesky } = prepared;
const media = prepared.media || [];
const images = [];
for (const [index, item] of $input.all().entries()) {
  const res = item.json;
  if (!('statusCode' in res) && res.upload === false) break;
  if (res.statusCode !== 200 || !res.body || !res.body.blob) {
    return [{ json: { outcome: blueskyAnswer(res, `uploading ${media[index].url}`) } }];
  }
  images.push({ alt: media[index].altText || '', image: res.body.blob });
}
const resolved = $('Bluesky: mentions resolved').isExecuted ? $('Bluesky: mentions resolved').first().json.dids : {};
const facets = [...bluesky.facets];
for (const m of bluesky.mentions) {
  if (resolved[m.handle]) facets.push({ index: m.index, features: [{ $type: 'app.bsky.richtext.facet#mention', did: resolved[m.handle] }] });
}
facets.sort((a, b) => a.index.byteStart - b.index.byteStart);
const record = { $type: 'app.bsky.feed.post', text: bluesky.text, createdAt: new Date().toISOString() };
if (facets.length) record.facets = facets;
if (images.length) {
  record.embed = { $type: 'app.bsky.embed.images', images };
} else if (bluesky.link) {
  // No page fetch here (n8n fetches nothing a post names besides its vetted media): the
  // card shows the URL as its title.
  record.embed = { $type: 'app.bsky.embed.external', external: { uri: bluesky.link, title: bluesky.link, description: '' } };
}
return [{ json: { request: { repo: session.did, collection: 'app.bsky.feed.post', record } } }];
