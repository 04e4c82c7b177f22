// LinkedIn: one item per upload, with its bytes next to the upload URL LinkedIn gave for
// it (the HTTP Request node's answer does not carry the input's binary on). An image is
// one upload; a video is one per part of its upload instructions, which must name the
// byte ranges the prepare step cut.
const prepared = $('LinkedIn: prepare').all();
const entry = $('Route on channel').first();
const out = [];
for (const [i, init] of $input.all().entries()) {
  const res = init.json;
  const value = res.statusCode === 200 && res.body && res.body.value;
  if (!value) return [{ json: { ok: false, uploadUrl: null } }];
  const item = prepared[i];
  if (!item.json.video) {
    out.push({ json: { ok: true, uploadUrl: value.uploadUrl }, binary: { data: entry.binary[item.json.binaryKey] } });
    continue;
  }
  const instructions = value.uploadInstructions || [];
  const ranges = instructions.map((u) => [u.firstByte, u.lastByte]);
  if (JSON.stringify(ranges) !== JSON.stringify(item.json.parts)) {
    return [{ json: { ok: false, uploadUrl: null, error: `LinkedIn asked for the video in parts ${JSON.stringify(ranges)}, not the 4 MiB parts ${JSON.stringify(item.json.parts)}` } }];
  }
  instructions.forEach((u, part) => {
    out.push({ json: { ok: true, uploadUrl: u.uploadUrl }, binary: { data: item.binary[`part${part}`] } });
  });
}
return out;
