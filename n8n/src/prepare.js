// Checks the post and picks its channel's branch. BRANCHES lists the channels this
// workflow has a branch for, in the order of the "Route on channel" outputs (build.py
// writes it from the net_*.py modules present). A channel without a branch fails for
// good with ChannelNotConfigured: a post is never published on another network.
const BRANCHES = __BRANCHES__;
const { post, idempotencyKey, dedupFile } = $input.first().json;
const fail = (code, message) => [{
  json: { post, idempotencyKey, dedupFile, outcome: { ok: false, code, message, permanent: true } },
}];
const channel = post.channel;
const route = BRANCHES.indexOf(channel);
if (route < 0) {
  return fail('ChannelNotConfigured',
    `channel ${JSON.stringify(channel)} has no branch in this n8n workflow (it has: ${BRANCHES.join(', ')}); nothing was posted`);
}
// Who posts: only the account Herald resolved (a SocialAccount or ClusterSocialAccount the
// post's namespace may use), never an identity read from free text. The signature covers
// the body, so the handle is Herald's word.
const account = post.account;
if (!account || typeof account !== 'object' || typeof account.handle !== 'string' || !account.handle) {
  return fail('NoAccount', 'the body has no account.handle (Herald sends the account it resolved for the post); nothing was posted');
}
if (account.channel !== channel) {
  return fail('AccountChannelMismatch',
    `account ${JSON.stringify(account.name)} is a ${JSON.stringify(account.channel)} account, the post is for ${JSON.stringify(channel)}; nothing was posted`);
}
const content = post.content || {};
if (typeof content.text !== 'string') return fail('InvalidPost', 'content.text is missing or not a string');
const media = Array.isArray(content.media) ? content.media : [];
for (const [i, m] of media.entries()) {
  if (!m || typeof m.url !== 'string') return fail('InvalidPost', `content.media[${i}].url is missing`);
}
// media: [] for a post without any: the download stage is skipped (a Code node less).
return [{ json: { post, idempotencyKey, dedupFile, route, channel, media: [], hasMedia: media.length > 0 } }];
