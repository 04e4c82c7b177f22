// LinkedIn: puts each image's bytes next to the upload URL LinkedIn gave for it (the
// HTTP Request node's answer does not carry the input's binary on).
const prepared = $('LinkedIn: prepare').all();
const entry = $('Route on channel').first();
return $input.all().map((init, i) => {
  const res = init.json;
  const ok = res.statusCode === 200 && res.body && res.body.value;
  return {
    json: { ok: Boolean(ok), uploadUrl: ok ? res.body.value.uploadUrl : null },
    binary: ok ? { data: entry.binary[prepared[i].json.binaryKey] } : {},
  };
});
