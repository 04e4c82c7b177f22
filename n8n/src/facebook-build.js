// Facebook Page: after the photos, either the post is made (one photo: its post_id) or
// the feed post to create: the message with the link, or with the photos attached.
const { graph } = $('Facebook: prepare').first().json;
const media = $('Facebook: prepare').first().json.media || [];
const photos = [];
for (const [index, item] of $input.all().entries()) {
  const res = item.json;
  if (!('statusCode' in res) && res.upload === false) break;
  if (res.statusCode !== 200 || !res.body || !res.body.id) {
    return [{ json: { outcome: graphAnswer(res, `uploading ${media[index].url}`) } }];
  }
  photos.push(res.body);
}
if (photos.length === 1) {
  const id = photos[0].post_id || photos[0].id;
  return [{ json: { outcome: { ok: true, externalId: id, externalUrl: `https://www.facebook.com/${id}` } } }];
}
const body = { message: graph.message };
if (photos.length) body.attached_media = photos.map((p) => ({ media_fbid: p.id }));
else if (graph.link) body.link = graph.link;
return [{ json: { request: body } }];
