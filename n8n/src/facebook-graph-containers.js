// Instagram and Threads: after the containers, what to publish: the one container, or
// (several images) a CAROUSEL container made of them first.
const { graph } = $(`${NET.name}: prepare`).first().json;
const ids = [];
for (const item of $input.all()) {
  const res = item.json;
  if (res.statusCode !== 200 || !res.body || !res.body.id) {
    return [{ json: { outcome: graphAnswer(res, 'creating a media container') } }];
  }
  ids.push(String(res.body.id));
}
if (graph.carousel) return [{ json: { carousel: { ...graph.carousel, children: ids.join(',') } } }];
return [{ json: { publish: { creation_id: ids[0] } } }];
