// X: one POST /2/media/metadata request per uploaded image that has alt text (X keeps
// alt text as media metadata); a single "skip" item when there is none, or when an upload
// failed (the build step reports that).
const prepared = $('X: prepare').all();
const uploads = $input.all().map((i) => i.json);
const out = [];
for (const [i, res] of uploads.entries()) {
  const id = res.body && res.body.data && res.body.data.id;
  if (!id) return [{ json: { skip: true } }];
  const altText = prepared[i].json.altText;
  if (altText) {
    out.push({ json: { skip: false, base: prepared[i].json.base, body: { id: String(id), metadata: { alt_text: { text: altText.slice(0, 1000) } } } } });
  }
}
return out.length ? out : [{ json: { skip: true } }];
