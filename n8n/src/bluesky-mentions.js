// Bluesky: a mention links to an account by its DID, so each @handle in the text is
// resolved (com.atproto.identity.resolveHandle, one item per handle).
const { bluesky } = $('Bluesky: prepare').first().json;
const handles = [...new Set(bluesky.mentions.map((m) => m.handle))];
if (!handles.length) return [{ json: { resolve: false } }];
return handles.map((handle) => ({ json: { resolve: true, handle } }));
