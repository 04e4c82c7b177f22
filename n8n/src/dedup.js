// De-duplicates on Herald's Idempotency-Key, safely under concurrent executions.
// The record of a key is a file in HERALD_DEDUP_DIR created with O_CREAT|O_EXCL ('wx'):
// the file system creates it at once and for exactly one caller, so of two executions
// with the same key only one can claim it, even in the same millisecond. (n8n's own
// stores do not give that: workflow static data is saved when an execution ends and the
// last one wins; Remove Duplicates reads its list, adds, and writes it back.)
// The claim says "in flight"; Outcome replaces it with the published record (or removes
// it when the attempt failed, so Herald's next attempt can claim it again).
// A delivery that finds the key in flight waits for that execution's outcome and
// answers from it; a claim older than HERALD_DEDUP_STALE_SECONDS (n8n died mid-way)
// is taken over through an atomic rename, so only one taker wins.
const fs = require('fs');
const path = require('path');
const { post, idempotencyKey } = $input.first().json;
const dir = $env.HERALD_DEDUP_DIR || '/home/node/.n8n/herald-dedup';
const waitSeconds = Number($env.HERALD_DEDUP_WAIT_SECONDS || 120);
const staleSeconds = Number($env.HERALD_DEDUP_STALE_SECONDS || 900);
fs.mkdirSync(dir, { recursive: true });
// The key is opaque: a digest gives a safe file name for any key.
const digest = require('crypto').createHash('sha256').update(String(idempotencyKey)).digest('hex');
const file = path.join(dir, `${digest}.json`);
const base = { namespace: post.namespace, name: post.name, uid: post.id, attempt: post.attempt };
const answer = (result) => [{ json: { handled: true, callback: post.callback, result: { ...base, ...result } } }];
const read = () => {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    // Missing: released. Half-written cannot happen (records are renamed into place),
    // but an empty claim file can be seen for an instant after O_EXCL: treat as in flight.
    return e.code === 'ENOENT' ? null : { state: 'claimed', at: Date.now() };
  }
};
const claim = () => {
  try {
    const fd = fs.openSync(file, 'wx');
    fs.writeSync(fd, JSON.stringify({ state: 'claimed', at: Date.now(), execution: $execution.id }));
    fs.closeSync(fd);
    return true;
  } catch (e) {
    if (e.code === 'EEXIST') return false;
    throw e;
  }
};
const deadline = Date.now() + waitSeconds * 1000;
for (;;) {
  if (claim()) return [{ json: { handled: false, post, idempotencyKey, dedupFile: file } }];
  const record = read();
  if (record && record.state === 'published') {
    return answer({ status: 'published', externalId: record.externalId, externalUrl: record.externalUrl });
  }
  if (record && Date.now() - record.at > staleSeconds * 1000) {
    // Move the stale claim aside; of several takers only one rename succeeds, and all
    // of them then race for a fresh O_EXCL claim, which again only one wins.
    try { fs.renameSync(file, `${file}.stale-${$execution.id}`); } catch (e) { /* another took it */ }
    continue;
  }
  if (Date.now() > deadline) {
    return answer({
      status: 'failed',
      error: {
        code: 'InProgress',
        message: `another execution is still publishing this post (Idempotency-Key ${idempotencyKey})`,
        retryable: true,
      },
    });
  }
  await new Promise((resolve) => setTimeout(resolve, 250));
}
