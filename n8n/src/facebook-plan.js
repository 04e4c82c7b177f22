// Facebook Page: one item per photo to upload. One photo is the post itself (published
// with the message as its caption); several are uploaded unpublished and attached to one
// feed post.
const prepared = $('Facebook: prepare').first();
const { graph } = prepared.json;
const media = prepared.json.media || [];
if (!media.length) return [{ json: { upload: false } }];
const single = media.length === 1;
return media.map((m) => ({
  json: {
    upload: true,
    binaryKey: m.binaryKey,
    published: single ? 'true' : 'false',
    message: single ? graph.message : '',
    altText: m.altText || '',
  },
  binary: prepared.binary,
}));
